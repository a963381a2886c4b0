# Cross build for Debian armhf (32-bit Raspberry Pi OS, ARMv7 hard-float) with Debian's cross
# toolchain and the armhf builds of the libraries (multiarch; scripts/deps installs them).
# Tests run under qemu-user: ctest starts each test program through CMAKE_CROSSCOMPILING_EMULATOR.
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-armhf.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE arm-linux-gnueabihf)
set(PKG_CONFIG_EXECUTABLE /usr/bin/arm-linux-gnueabihf-pkg-config CACHE FILEPATH "pkg-config for the target")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-arm)

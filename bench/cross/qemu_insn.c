/* qemu_insn.c - a qemu-user TCG plugin that counts the guest instructions a program executes,
 * all threads together, and writes the total when the program exits. It is the instruction
 * counter for builds of other architectures, where valgrind cannot run: bench/cross/insn.sh
 * runs midge under qemu-aarch64, qemu-arm or qemu-x86_64 with it (docs/packaging.md).
 *
 *   qemu-arm -plugin bench/cross/qemu_insn.so,out=FILE build-armhf/midge ...
 *
 * Written against the plugin API of Debian 12's QEMU 7.2 (API version 1), which ships no
 * header: the few declarations it needs are below. Counts are kept per vCPU (one per guest
 * thread in qemu-user), so threads never race on a counter; each translated block adds its
 * instruction count each time it runs (blocks end at branches and system calls).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
void qemu_plugin_outs(const char *string);
int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc, char **argv);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MAX_VCPUS 4096
static uint64_t counts[MAX_VCPUS];
static uint64_t overflow; /* vCPUs past MAX_VCPUS: atomic, so still exact */
static char out_path[4096];

static void on_exec(unsigned int vcpu, void *n)
{
    if (vcpu < MAX_VCPUS)
        counts[vcpu] += (uintptr_t)n;
    else
        __atomic_fetch_add(&overflow, (uintptr_t)n, __ATOMIC_RELAXED);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS,
                                         (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *p)
{
    (void)id;
    (void)p;
    uint64_t total = __atomic_load_n(&overflow, __ATOMIC_RELAXED);
    for (int i = 0; i < MAX_VCPUS; i++)
        total += counts[i];
    char line[64];
    snprintf(line, sizeof(line), "insns %llu\n", (unsigned long long)total);
    FILE *f = out_path[0] ? fopen(out_path, "w") : NULL;
    if (f) {
        fputs(line, f);
        fclose(f);
    } else {
        qemu_plugin_outs(line);
    }
}

__attribute__((visibility("default"))) int
qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            snprintf(out_path, sizeof(out_path), "%s", argv[i] + 4);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}

/* fuzz_ws_answer.c - libFuzzer target for the check of a WebSocket server's answer to a
 * bridge's upgrade request (src/net/ws_handshake.c), the one piece of a bridge's input it
 * parses itself: CONNACK, SUBACK and every other packet from the remote go through
 * codec_decode, which fuzz_codec and fuzz_codec5 cover.
 *
 * Owns only the oracle: the check never reads past the head, always says why it refuses, and
 * accepts only a 101 answer that carries the expected key.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/net/ws_handshake.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    /* An exact-size copy, so ASan catches a read past the head. */
    char *head = malloc(size ? size : 1);
    if (!head)
        return 0;
    if (size)
        memcpy(head, data, size);
    char why[160];
    why[0] = '\0';
    int r = ws_client_check_answer(head, size, accept, why, sizeof(why));
    if (r != 0 && r != -1)
        abort();
    if (r == -1 && !why[0])
        abort();
    if (r == 0 && (size < 12 || memcmp(head + 9, "101", 3) ||
                   !memmem(head, size, accept, sizeof(accept) - 1)))
        abort();
    free(head);
    return 0;
}

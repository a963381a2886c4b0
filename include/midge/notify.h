/* notify.h - the systemd notification protocol (sd_notify), spoken directly on
 * $NOTIFY_SOCKET so midge needs no libsystemd. Every call is a no-op when midge
 * was not started by systemd (no $NOTIFY_SOCKET).
 */
#ifndef MIDGE_NOTIFY_H
#define MIDGE_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

/* Send one datagram of newline-separated assignments, e.g. "READY=1\nSTATUS=...".
 * Returns 0, or a negative errno when the socket exists but the send failed. */
int notify_send(const char *state);

/* printf-style notify_send. */
int notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The watchdog interval systemd asked for ($WATCHDOG_USEC, when $WATCHDOG_PID is
 * unset or ours), in microseconds; 0 when there is none. */
uint64_t notify_watchdog_usec(void);

/* True when stderr is connected to the journal ($JOURNAL_STREAM names it), so log
 * lines should carry "<N>" priority prefixes. */
bool notify_stderr_is_journal(void);

#endif

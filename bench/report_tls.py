"""bench/report_tls.py - the TLS section of docs/benchmarks.md (issue 17), kept apart from
report.py: where an idle TLS connection's memory goes before and after, and what each
change bought, measured by hand with the commands given (report.py writes the TLS rows
of the summary, TF to TS, from the runs)."""

# Live heap per idle TLS 1.3 connection (RSA-2048, AES-256-GCM), from a census of
# OpenSSL's allocations by call site: a preloaded library installs
# CRYPTO_set_mem_functions and counts live chunk bytes per file:line, dumped before and
# after 1,000 `midge-bench conns --tls` connections (each count includes 16 bytes of the
# census's own header per allocation). "before" is commit dc5ae83, "after" this branch.
MEMORY_ROWS = [
    ("the `SSL` object (`SSL_new`)", "7,648", "–"),
    ("two memory BIOs: their buffers (the largest handshake flight each way) and their "
     "`BIO`/`BUF_MEM` structs", "2,960", "–"),
    ("midge's connection BIO (no buffer)", "–", "–"),
    ("the session (`SSL_SESSION`), the certificate copy (`ssl_cert_dup`), verify "
     "parameters, sigalg lists, stacks", "2,150", "–"),
    ("handshake hashes (two SHA-384 contexts) and the X25519 keys (ours and the client's)",
     "1,380", "–"),
    ("locks (`CRYPTO_THREAD_lock_new`, 9 of them)", "723", "–"),
    ("AES-256-GCM, one context per direction (`EVP_CIPHER_CTX` and the provider's)",
     "2,400", "2,400"),
    ("`struct tls_rec` (keys, IVs, sequence numbers; `src/net/tls_rec.c`)", "–", "208"),
    ("`struct tls_conn` and the connection's layer slot", "≈ 100", "112"),
    ("what a plain connection holds (F: client, session, leaf, table shares)", "≈ 360",
     "≈ 360"),
    ("total live heap", "≈ 17,700", "≈ 3,100"),
]


def tls_section(w):
    w("## TLS (issue 17)")
    w("")
    w("Rows TF to TS of the summary, with the configuration of the other scenarios plus "
      "`certfile`/`keyfile` (a test CA made by compare.sh: RSA-2048 and ECDSA P-256 server "
      "certificates for 127.0.0.1). `midge-bench --tls` checks the broker's certificate "
      "against that CA; TLS 1.3 unless said otherwise.")
    w("")
    w("### Memory per idle TLS connection (TF): where it goes")
    w("")
    w("Live heap per idle TLS 1.3 connection (RSA-2048 certificate, AES-256-GCM), in bytes: "
      "a census of OpenSSL's allocations by call site (a preloaded library installs "
      "`CRYPTO_set_mem_functions` and counts live chunks per `file:line`; dumps before and "
      "after 1,000 `midge-bench conns --tls` connections), before (commit dc5ae83) and "
      "after this work:")
    w("")
    w("| what | before | after |")
    w("| --- | --- | --- |")
    for what, before, after in MEMORY_ROWS:
        w(f"| {what} | {before} | {after} |")
    w("")
    w("The RSS per connection (the TF row) is above the live heap because the handshakes' "
      "short-lived allocations leave holes between the long-lived ones: 3.8 KiB at 5,000 "
      "connections against Mosquitto's 15.6 in the same session (3.0 live), 4.6-5.4 KiB at "
      "2,000. Before this work midge needed 18.5 KiB at 2,000 connections where Mosquitto "
      "needed 16.5.")
    w("")
    w("What OpenSSL offers for idle connections, and what each did here:")
    w("")
    w("- **`SSL_MODE_RELEASE_BUFFERS`** was already on: the record buffers (about 17 KiB "
      "each way) are freed while a connection is idle; the census finds none left. "
      "**Read-ahead** only changes how much a busy connection's read buffer holds.")
    w("- **Memory BIOs** kept their largest flight: 2.3 KiB of buffers per connection, plus "
      "two BIOs. A BIO of midge's own (reading the bytes `input()` is handling, writing "
      "straight into the connection's output buffer) has no buffer: −2.9 KiB live. "
      "**`SSL_set_fd`** (OpenSSL reading the socket) would hold no buffer either, but "
      "OpenSSL would then write the socket itself, outside midge's one write per "
      "connection per loop turn and its EAGAIN handling; it saves nothing more. BIO pairs "
      "have fixed buffers per connection: more memory, not less.")
    w("- **The `SSL` object itself** (7.6 KiB in OpenSSL 3.0, with its session, "
      "certificate copy, handshake hashes and key-exchange keys: about 12 KiB) stays for "
      "the connection's life whatever the BIOs. midge lets OpenSSL run the handshake, then "
      "takes the record layer over: the TLS 1.3 traffic secrets (OpenSSL's key-log "
      "callback) or the TLS 1.2 master secret, and the sequence numbers reached (counted "
      "from OpenSSL's message callback), go to `src/net/tls_rec.c`, which keeps one "
      "OpenSSL AEAD context per direction, and the `SSL` is freed: 18.5 → 5.4 KiB RSS per "
      "connection at 2,000 connections (Mosquitto 16.5 in the same session). TLS 1.2 "
      "connections with an AEAD suite too: 15.1 → 4.9 KiB (Mosquitto 15.1); a CBC suite "
      "keeps OpenSSL's record layer.")
    w("")
    w("### CPU")
    w("")
    w("- **One record per loop turn** instead of one per MQTT packet (`SSL_write` per "
      "packet, as before and as Mosquitto does): what a connection is sent during a turn is "
      "filled into a record in place in its output buffer and sealed just before the "
      "turn's write. Scenario A over TLS: 0.92 → 0.43-0.46 µs per message (plain TCP "
      "0.31-0.35 in the same session; `midge-bench pubsub --tls --duration 3 --warmup 0.5 "
      "--size 64 --publishers 16 --subscribers 16 --topics 16 --qos 0`).")
    w("- **Handshakes**: the broker's CPU per full handshake is OpenSSL's (about 80 % in "
      "libcrypto: the server's signature, X25519, the key schedule; 5-9 % in malloc and "
      "free). Instructions per RSA-2048 handshake in the broker, under callgrind (100 "
      "handshakes, `midge-bench conns --tls --cafile ca.crt --count 100 --rate 50`): 9.01 "
      "million before this work, 9.23 million with the record-layer set-up, the early "
      "`SSL_free` (Mosquitto frees at the disconnection, outside TH's window) and the key-log "
      "and message callbacks, 9.18 million once midge fetched its ciphers and digests once "
      "instead of at every set-up (OpenSSL 3.0's getters look the algorithm up at each use) "
      "and built the certificate chain once per context instead of at every handshake. So "
      "midge's own share of a handshake is about 2 %: a handshake costs what OpenSSL's "
      "handshake costs, in midge as in Mosquitto, and the 0.9 × target of TH and THE is "
      "out of midge's reach without doing less cryptography. One session ticket per "
      "handshake (OpenSSL's default, which Mosquitto keeps, is two). An ECDSA P-256 "
      "certificate makes the signature cheap (THE against TH).")
    w("- **Resumption** (THR): tickets sealed with keys of midge's own (AES-256-CBC and "
      "HMAC-SHA256 through `SSL_CTX_set_tlsext_ticket_key_evp_cb`), rotated hourly, kept in "
      "memory only; a fresh ticket on every resumption, since TLS 1.3 clients use a ticket "
      "once (before that, OpenSSL clients reconnecting in a row resumed every other time). "
      "TH12 and THR12 are TH and THR with TLS 1.2 clients (`--tls-version tlsv1.2`), as many "
      "devices still are (mbedTLS on ESP32 boards): a TLS 1.3 resumption still does an X25519 "
      "key exchange and the HKDF key schedule, a TLS 1.2 one is an abbreviated handshake "
      "without a key exchange, so each version's resumption is set against its own full "
      "handshake (THR against TH, THR12 against TH12).")
    w("- **Reconnect storm** (TS): a handshake step is budgeted (0.5 ms of handshake time "
      "per loop wake-up; later steps wait in FIFO queues, handshakes under way before new "
      "ones, a new one's `SSL` made only when its turn comes, and the time spent waiting "
      "there does not count against `connect_timeout`). Before, a wake-up could run up to 256 handshakes back to back. "
      "2,000 RSA clients at once during 4 fixed-rate pairs, on this (then heavily loaded) "
      "machine: the connected clients' p50 671 ms → 7 ms, p99 2.0 s → 35 ms, the longest "
      "loop turn 11 → 5.5 ms of broker CPU (Mosquitto: p99 5.2 s). Handshakes stay on the "
      "loop thread: with the broker on one CPU, a worker thread would take the same CPU, "
      "and the budget bounds the stall to about one handshake step (its signature: see TH "
      "and THE). The TS row's latencies are wall-clock figures "
      "of a 2-CPU VM shared with other work; they move with its load.")
    w("")
    w("The issue 7 rows, A/B against the commit before this work (dc5ae83), midge alone, "
      "alternating, same commands as above: the median of the per-pair ratios (this work / "
      "before) is A 1.01 (9 pairs), B 1.00, C 1.01, D 0.97 (9 pairs), E 0.90, F 1.00 "
      "(0.358 KiB both), W 0.94; R0 and R1 are not resolvable on this machine today (the "
      "same binary measured 4.7 to 37 µs per message from run to run). For plain TCP the "
      "code path gained only a few pointer tests per wake-up.")
    w("")

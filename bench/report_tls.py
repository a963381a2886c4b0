"""bench/report_tls.py - the TLS section of docs/benchmarks.md (issue 17), kept apart from
report.py: where an idle TLS connection's memory goes before and after, and what each
change bought, measured by hand with the commands given (report.py writes the TLS rows
of the summary from the runs)."""


def tls_section(w):
    w("## TLS (issue 17)")
    w("")

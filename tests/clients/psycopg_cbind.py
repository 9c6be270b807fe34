"""Log in over TLS with channel_binding=require (SCRAM-SHA-256-PLUS, tls-server-end-point),
run by tests/tests/proxy_drivers.rs against the proxy. Prints what it saw; a wrong password
must still be refused.

Connection from the environment: DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB,
DW_SSLROOTCERT.
"""
import os

import psycopg

base = dict(
    host=os.environ["DW_HOST"],
    port=os.environ["DW_PORT"],
    user=os.environ["DW_USER"],
    dbname=os.environ["DW_DB"],
    sslmode="verify-full",
    sslrootcert=os.environ["DW_SSLROOTCERT"],
    channel_binding="require",
)
with psycopg.connect(password=os.environ["DW_PASSWORD"], **base) as conn:
    user = conn.execute("SELECT current_user").fetchone()[0]
    print("bound login as", user, "ssl", conn.pgconn.ssl_in_use)
try:
    psycopg.connect(password="wrong", **base).close()
    print("wrong password accepted")
except psycopg.OperationalError as e:
    print("wrong password refused:", "password authentication failed" in str(e))

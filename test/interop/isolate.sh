#!/bin/sh
# Run a command in a private network namespace (only its own loopback, brought up here) and a
# private mount namespace. Inside, the interop world (nsd, unbound, Postfix, our relay) cannot
# collide with system daemons the package install may have started (a Debian postfix on *:25, an
# nsd on *:53), and cannot reach any address but its own 127.0.0.0/8: nothing outside is touched,
# nothing is stopped. Needs root (CAP_SYS_ADMIN), as CI's apt-get does.
set -e
if [ "${DANE_RELAY_ISOLATED:-}" = 1 ]; then exec "$@"; fi
exec unshare --net --mount --propagation private env DANE_RELAY_ISOLATED=1 \
  sh -c 'ip link set lo up && exec "$@"' isolate "$@"

#!/bin/sh
# Run a command in a private network namespace (only its own loopback, brought up here) and a
# private mount namespace. Inside, the interop world (nsd, unbound, Postfix, our relay) cannot
# collide with system daemons the package install may have started (a Debian postfix on *:25, an
# nsd on *:53), and cannot reach any address but its own 127.0.0.0/8: nothing outside is touched,
# nothing is stopped. Needs root (CAP_SYS_ADMIN), as CI's apt-get does.
#
# Usage: isolate.sh [--or-skip] COMMAND...
# As an ordinary user the namespaces cannot be made (and Postfix could not switch to its own user):
# with --or-skip (`npm test`) that is said and the command is skipped with exit 0, so the rest of
# the suite still counts; without it (`npm run test:interop`, `bench:postfix`) it is an error. As root,
# a failure to make the namespaces is always an error that says why.
set -e
or_skip=
if [ "${1:-}" = --or-skip ]; then or_skip=1; shift; fi
if [ "${DANE_RELAY_ISOLATED:-}" = 1 ]; then exec "$@"; fi
if [ "$(id -u)" != 0 ]; then
  why="the interop suite needs root: it makes network and mount namespaces, binds ports 25 and 53 on 127.x addresses and runs Postfix, which switches to the postfix user"
  if [ -n "$or_skip" ]; then
    echo "isolate.sh: interop suite SKIPPED: $why (running as $(id -un)). Run \`npm run test:interop\` as root to include it." >&2
    exit 0
  fi
  echo "isolate.sh: $why (running as $(id -un)); run it as root" >&2
  exit 1
fi
if ! err=$(unshare --net --mount --propagation private true 2>&1); then
  echo "isolate.sh: cannot make private network and mount namespaces as root: $err (a container needs CAP_SYS_ADMIN, e.g. docker run --privileged)" >&2
  exit 1
fi
exec unshare --net --mount --propagation private env DANE_RELAY_ISOLATED=1 \
  sh -c 'ip link set lo up && exec "$@"' isolate "$@"

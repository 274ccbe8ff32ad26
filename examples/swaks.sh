#!/bin/sh
# One test message through dane-relay with swaks (https://jetmore.org/john/code/swaks/).
# SMARTHOST_PORT, MAIL_FROM and MAIL_TO override the defaults.
exec swaks --server 127.0.0.1 --port "${SMARTHOST_PORT:-2525}" \
  --from "${MAIL_FROM:-app@example.net}" --to "${MAIL_TO:-user@example.org}" \
  --header "Subject: dane-relay smarthost test" --body "Sent by swaks via dane-relay." --timeout 30

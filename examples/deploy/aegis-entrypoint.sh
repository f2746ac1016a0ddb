#!/bin/bash
# The aegis container: `aegis serve` for decisions, approvals and the audit trail, and tinyproxy,
# the only way out of the agents' network, which lets through CONNECTs to the model APIs only.
# If either process ends the container ends, and compose restarts it.
set -eu
tinyproxy -d -c /etc/tinyproxy/aegis.conf &
aegis serve -p /etc/aegis/policy.yaml --host 0.0.0.0 --port 8787 \
  --audit-db /var/lib/aegis/audit.db --audit-sync full &
wait -n
exit 1

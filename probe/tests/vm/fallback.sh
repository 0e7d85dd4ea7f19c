# Booted with lsm=lockdown,capability: BPF LSM is built into the kernel but not active, so
# LSM programs load and attach and never run; securityfs is not mounted, as in most pods.
# The probe must not end on lsm: its self-test (a canary connect its backend must report)
# fails there, and auto moves on. A container-style connect must still be reported.
. /lib.sh
mkdir -p /sys/fs/cgroup/docker/$CID
/bin/swclient serve /run/docker.sock >/dev/null &
sleep 0.5

/bin/sockwarden-probe run --no-default-sockets --socket /run/docker.sock=docker \
  --format json --listen 127.0.0.1:$PORT >/tmp/findings.json 2>/tmp/probe.log &
PROBE=$!
if wait_for /tmp/probe.log "serving /healthz" 180; then
  chosen=$(grep "backend chosen" /tmp/probe.log | tr '\n' ' ')
  echo "SWINFO chosen: $chosen"
  if echo "$chosen" | grep -q "backend=lsm"; then
    result auto not-lsm "FAIL auto ended on lsm: $chosen"
  elif echo "$chosen" | grep -q "lsm unavailable: the lsm programs attached but a test connect"; then
    result auto not-lsm PASS
  else
    result auto not-lsm "FAIL lsm was not refused for its self-test: $chosen"
  fi
  in_container "/bin/swclient connect /run/docker.sock" >/dev/null
  if wait_for /tmp/findings.json "\"id\":\"$CID\"" 30; then
    result auto finding PASS
  else
    result auto finding "FAIL no finding: $(tail -c 400 /tmp/probe.log | tr '\n' ' ')"
  fi
  wget -q -O /tmp/ready "http://127.0.0.1:$PORT/readyz" && result auto ready PASS \
    || result auto ready "FAIL $(wget -q -O - http://127.0.0.1:$PORT/readyz 2>&1)"
else
  result auto not-lsm "FAIL the probe did not start: $(tail -c 600 /tmp/probe.log | tr '\n' ' ')"
fi
kill $PROBE; wait $PROBE 2>/dev/null

# Forced lsm: it loads and attaches, then says it is blind instead of looking healthy.
# A log of its own: the auto run's log already says "serving", and the shell truncates a
# reused file only once the new probe has started, so waiting on it raced.
/bin/sockwarden-probe run --backend lsm --no-default-sockets --socket /run/docker.sock=docker \
  --format json --listen 127.0.0.1:$PORT >/tmp/findings.json 2>/tmp/probe-forced.log &
PROBE=$!
# "serving" is logged once the health listener is bound (after the sockets are armed).
if wait_for /tmp/probe-forced.log "serving /healthz" 180; then
  sleep 1
  body=$(wget -q -O - "http://127.0.0.1:$PORT/readyz" 2>&1; true)
  code=$(wget -S -O /dev/null "http://127.0.0.1:$PORT/readyz" 2>&1 | grep -o "HTTP/1.1 [0-9]*" | tail -n1)
  if echo "$code" | grep -q 503 && grep -q "self-test" /tmp/probe-forced.log; then
    result lsm-forced not-ready PASS
  else
    result lsm-forced not-ready "FAIL readyz: $code $body; log: $(tail -c 600 /tmp/probe-forced.log | tr '\n' ' ')"
  fi
else
  result lsm-forced not-ready "FAIL the probe did not start: $(tail -c 600 /tmp/probe-forced.log | tr '\n' ' ')"
fi
kill $PROBE; wait $PROBE 2>/dev/null

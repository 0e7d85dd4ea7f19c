# Scenarios run inside the VM, once per backend. Containers are stood in for by a cgroup
# named like a Docker container's plus new mount and PID namespaces.
CID=4c1f0e2d3b4a59687766554433221100ffeeddccbbaa99887766554433221100
PORT=9464

result() { echo "SWTEST $1 $2 $3"; }

wait_for() { # file pattern seconds
  i=0
  while [ $i -lt $(( $3 * 10 )) ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

# Runs a command in the container's cgroup but in the host's namespaces, as a hostPID
# container that nsenter'd the host's mount and PID namespaces.
in_container_cgroup_only() {
  sh -c "echo \$\$ > /sys/fs/cgroup/docker/$CID/cgroup.procs && exec $1"
}

# Runs a command "in a container": own cgroup, mount namespace and PID namespace.
in_container() {
  sh -c "echo \$\$ > /sys/fs/cgroup/docker/$CID/cgroup.procs && exec unshare -m -p -f sh -c '$1'"
}

expect_finding() { # backend name requested-path operation
  if wait_for /tmp/findings.json "\"requestedPath\":\"$3\"" 20 \
     && grep "\"requestedPath\":\"$3\"" /tmp/findings.json | grep -q "\"id\":\"$CID\"" \
     && grep "\"requestedPath\":\"$3\"" /tmp/findings.json | grep -q "\"operation\":\"$4\"" \
     && grep "\"requestedPath\":\"$3\"" /tmp/findings.json | grep -q "\"backend\":\"$1\""; then
    result "$1" "$2" PASS
  else
    result "$1" "$2" "FAIL no $4 finding for $3"
  fi
}

expect_none() { # backend name requested-path
  if grep -q "\"requestedPath\":\"$3\"" /tmp/findings.json; then
    result "$1" "$2" "FAIL unexpected finding for $3"
  else
    result "$1" "$2" PASS
  fi
}

start_probe() { # backend
  rm -f /tmp/findings.json /tmp/probe.log
  /bin/sockwarden-probe run --backend "$1" --no-default-sockets --socket /run/docker.sock=docker \
    --format json --listen 127.0.0.1:$PORT >/tmp/findings.json 2>/tmp/probe.log &
  PROBE=$!
  if ! wait_for /tmp/probe.log "watching socket" 120; then
    result "$1" start "FAIL probe did not start: $(tail -c 600 /tmp/probe.log | tr '\n' ' ')"
    return 1
  fi
  result "$1" start PASS
}

stop_probe() {
  kill $PROBE; wait $PROBE 2>/dev/null
}

mkdir -p /sys/fs/cgroup/docker/$CID
/bin/swclient serve /run/docker.sock >/dev/null &
DAEMON=$!
sleep 0.5

for backend in lsm fentry; do
  start_probe $backend || continue
  in_container "/bin/swclient connect /run/docker.sock" >/dev/null
  expect_finding $backend direct-path /run/docker.sock connect
  in_container "mkdir -p /tmp/b && touch /tmp/b/innocent.sock && mount --bind /run/docker.sock /tmp/b/innocent.sock && /bin/swclient connect /tmp/b/innocent.sock" >/dev/null
  expect_finding $backend bind-mount-alias /tmp/b/innocent.sock connect
  in_container "ln -s /run/docker.sock /tmp/link-$backend.sock && /bin/swclient connect /tmp/link-$backend.sock" >/dev/null
  expect_finding $backend symlink /tmp/link-$backend.sock connect
  ln -s /run/docker.sock /tmp/hostns-$backend.sock
  in_container_cgroup_only "/bin/swclient connect /tmp/hostns-$backend.sock" >/dev/null
  expect_finding $backend host-namespaces-connect /tmp/hostns-$backend.sock connect
  ln -s /run/docker.sock /tmp/hostns-open-$backend.sock
  in_container_cgroup_only "/bin/swclient open /tmp/hostns-open-$backend.sock" >/dev/null
  expect_finding $backend host-namespaces-open /tmp/hostns-open-$backend.sock open
  in_container "/bin/swclient open /run/docker.sock" >/dev/null
  expect_finding $backend open-write-intent /run/docker.sock open
  in_container "mkdir -p /tmp/decoy-$backend && /bin/swclient decoy /tmp/decoy-$backend/docker.sock" >/dev/null
  /bin/swclient connect /run/docker.sock >/dev/null # a host process
  # positive control after the negatives: events arrive in order
  in_container "/bin/swclient connect /proc/self/root/run/docker.sock" >/dev/null
  expect_finding $backend proc-root-alias /proc/self/root/run/docker.sock connect
  expect_none $backend decoy /tmp/decoy-$backend/docker.sock
  if grep -v "\"id\":\"$CID\"" /tmp/findings.json | grep -q requestedPath; then
    result $backend host-process "FAIL a host process was reported"
  else
    result $backend host-process PASS
  fi
  stop_probe
done

# what fentry-backend enforcement will use: fmod_ret on the security_* functions
if /bin/sockwarden-probe check-fmod-ret >/tmp/fmod.log 2>&1; then
  result fentry fmod-ret-loads PASS
else
  result fentry fmod-ret-loads "FAIL $(tr '\n' ' ' </tmp/fmod.log)"
fi

# auto-selection picks lsm here
start_probe auto && {
  if grep -q "backend chosen.*backend=lsm" /tmp/probe.log; then
    result auto chooses-lsm PASS
  else
    result auto chooses-lsm "FAIL $(grep 'backend chosen' /tmp/probe.log | tr '\n' ' ')"
  fi
  stop_probe
}

# overhead on unrelated open()/connect(), probe attached vs not, alternating
echo x > /tmp/regular
for backend in lsm fentry; do
  for round in 1 2 3; do
    bo=$(/bin/swclient bench-open /tmp/regular); bc=$(/bin/swclient bench-connect /tmp/unrelated.sock)
    start_probe $backend >/dev/null || break
    po=$(/bin/swclient bench-open /tmp/regular); pc=$(/bin/swclient bench-connect /tmp/unrelated.sock)
    stop_probe
    echo "SWBENCH $backend round=$round open_base=$bo open_probe=$po connect_base=$bc connect_probe=$pc"
  done
done
# what each hook costs per run, from the kernel's own BPF statistics
echo 1 > /proc/sys/kernel/bpf_stats_enabled
for backend in lsm fentry; do
  start_probe $backend >/dev/null || continue
  opens=$(/bin/swclient bench-open /tmp/regular)
  connects=$(/bin/swclient bench-connect /tmp/unrelated.sock)
  sleep 1.5 # the probe refreshes its program metrics every 0.5 s
  wget -q -O /tmp/metrics "http://127.0.0.1:$PORT/metrics"
  grep -E '^sockwarden_probe_program_(runs|run_seconds)\{program="'$backend'_' /tmp/metrics | while read -r series value; do
    echo "SWSTATS $backend $series $value"
  done
  echo "SWSTATS $backend open_ns=$opens connect_ns=$connects"
  stop_probe
done
echo 0 > /proc/sys/kernel/bpf_stats_enabled
kill $DAEMON

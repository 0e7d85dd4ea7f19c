# Shared by the VM scripts (sourced). Containers are stood in for by a cgroup named like a
# Docker container's plus new mount and PID namespaces. Results go to the serial console as
# lines starting with SW, which the host test parses.
CID=4c1f0e2d3b4a59687766554433221100ffeeddccbbaa99887766554433221100
# A container whose cgroup appears while the probe already enforces.
CID2=5d2a1f3e4c5b6a798877665544332211ffeeddccbbaa998877665544332211aa
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

# Starts the probe with backend $1 (more flags after it); returns 1, with the probe's own
# last words in /tmp/probe.log, when it exits instead of watching.
start_probe() { # backend [flags...]
  backend=$1; shift
  rm -f /tmp/findings.json /tmp/probe.log
  /bin/sockwarden-probe run --backend "$backend" --no-default-sockets --socket /run/docker.sock=docker \
    --format json --listen 127.0.0.1:$PORT "$@" >/tmp/findings.json 2>/tmp/probe.log &
  PROBE=$!
  i=0
  while [ $i -lt 1200 ]; do
    grep -q "watching socket" /tmp/probe.log 2>/dev/null && return 0
    kill -0 $PROBE 2>/dev/null || return 1
    sleep 0.1; i=$((i + 1))
  done
  return 1
}

stop_probe() {
  kill $PROBE; wait $PROBE 2>/dev/null
}

# Every detection scenario against the running probe (backend $1 names it in findings).
run_scenarios() { # backend
  b=$1
  in_container "/bin/swclient connect /run/docker.sock" >/dev/null
  expect_finding $b direct-path /run/docker.sock connect
  in_container "mkdir -p /tmp/b-$b && touch /tmp/b-$b/innocent.sock && mount --bind /run/docker.sock /tmp/b-$b/innocent.sock && /bin/swclient connect /tmp/b-$b/innocent.sock" >/dev/null
  expect_finding $b bind-mount-alias /tmp/b-$b/innocent.sock connect
  in_container "ln -s /run/docker.sock /tmp/link-$b.sock && /bin/swclient connect /tmp/link-$b.sock" >/dev/null
  expect_finding $b symlink /tmp/link-$b.sock connect
  ln -s /run/docker.sock /tmp/hostns-$b.sock
  in_container_cgroup_only "/bin/swclient connect /tmp/hostns-$b.sock" >/dev/null
  expect_finding $b host-namespaces-connect /tmp/hostns-$b.sock connect
  ln -s /run/docker.sock /tmp/hostns-open-$b.sock
  in_container_cgroup_only "/bin/swclient open /tmp/hostns-open-$b.sock" >/dev/null
  expect_finding $b host-namespaces-open /tmp/hostns-open-$b.sock open
  in_container "/bin/swclient open /run/docker.sock" >/dev/null
  expect_finding $b open-write-intent /run/docker.sock open
  in_container "mkdir -p /tmp/decoy-$b && /bin/swclient decoy /tmp/decoy-$b/docker.sock" >/dev/null
  /bin/swclient connect /run/docker.sock >/dev/null # a host process
  # positive control after the negatives: events arrive in order
  in_container "/bin/swclient connect /proc/self/root/run/docker.sock" >/dev/null
  expect_finding $b proc-root-alias /proc/self/root/run/docker.sock connect
  expect_none $b decoy /tmp/decoy-$b/docker.sock
  if grep -v "\"id\":\"$CID\"" /tmp/findings.json | grep -q requestedPath; then
    result $b host-process "FAIL a host process was reported"
  else
    result $b host-process PASS
  fi
}

# What each hook costs per run, from the kernel's own BPF statistics, and the unrelated
# syscalls' own time in the same run. Needs the probe running with backend $1.
report_stats() { # backend
  opens=$(/bin/swclient bench-open /tmp/regular)
  connects=$(/bin/swclient bench-connect /tmp/unrelated.sock)
  sleep 1.5 # the probe refreshes its program metrics every 0.5 s
  wget -q -O /tmp/metrics "http://127.0.0.1:$PORT/metrics"
  grep -E '^sockwarden_probe_program_(runs|run_seconds)\{program="' /tmp/metrics | while read -r series value; do
    echo "SWSTATS $1 $series $value"
  done
  echo "SWSTATS $1 open_ns=$opens connect_ns=$connects"
}

# Overhead on unrelated open()/connect(): the probe attached vs not, alternating rounds.
report_bench() { # backend rounds [flags...]
  b=$1; rounds=$2; shift 2
  round=1
  while [ $round -le $rounds ]; do
    bo=$(/bin/swclient bench-open /tmp/regular); bc=$(/bin/swclient bench-connect /tmp/unrelated.sock)
    start_probe $b "$@" >/dev/null || break
    po=$(/bin/swclient bench-open /tmp/regular); pc=$(/bin/swclient bench-connect /tmp/unrelated.sock)
    stop_probe
    echo "SWBENCH $b round=$round open_base=$bo open_probe=$po connect_base=$bc connect_probe=$pc"
    round=$((round + 1))
  done
}

start_daemon() {
  mkdir -p /sys/fs/cgroup/docker/$CID
  # The stand-in daemon logs what each connection sent: "did the daemon hear a request".
  /bin/swclient serve-log /run/docker.sock /tmp/daemon.log >/dev/null &
  DAEMON=$!
  echo x > /tmp/regular
  sleep 0.5
}

# Stopped: the daemon heard no request, the client did not get through, and (while the probe
# runs) the finding says Blocked and how. $how is EPERM or SIGKILL.
expect_stopped() { # backend name client-output requested-path probe-alive
  if grep -q "conn [1-9]" /tmp/daemon.log; then
    result "$1" "$2" "FAIL the daemon received a request: $(tr '\n' ' ' </tmp/daemon.log)"
  elif echo "$3" | grep -q connected; then
    result "$1" "$2" "FAIL the client got through: $3"
  elif [ "$how" = EPERM ] && ! echo "$3" | grep -q "Operation not permitted"; then
    result "$1" "$2" "FAIL no EPERM: $3"
  elif [ "$5" = alive ] && ! { wait_for /tmp/findings.json "\"requestedPath\":\"$4\"" 20 \
      && grep "\"requestedPath\":\"$4\"" /tmp/findings.json | grep "\"action\":\"Blocked\"" \
      | grep -q "\"enforcement\":\"$how\""; }; then
    result "$1" "$2" "FAIL no Blocked/$how finding for $4"
  else
    result "$1" "$2" PASS
  fi
  : > /tmp/daemon.log
}

# Enforcement with backend $1: a container is stopped by the direct path, a bind mount, a
# symlink and as a new container; its write-intent open too where the hook can refuse; the
# host is spared; the pinned links keep enforcing after the probe is SIGKILLed, until
# `uninstall`. lsm and fentry refuse (EPERM), tracepoint and kprobe stop the caller (SIGKILL).
run_enforce() { # backend
  b=$1
  case $b in lsm|fentry) how=EPERM ;; *) how=SIGKILL ;; esac
  pins=/sys/fs/bpf/sw-$b
  if ! start_probe $b --enforce --pin-dir $pins; then
    result $b enforce-starts "FAIL $(tail -c 300 /tmp/probe.log | tr '\n' ' ')"
    return
  fi
  # enforcement is armed after the sockets are watched: wait for it, or for the probe's exit
  i=0
  while [ $i -lt 600 ] && ! grep -q "enforcing" /tmp/probe.log && kill -0 $PROBE 2>/dev/null; do
    sleep 0.1; i=$((i + 1))
  done
  if grep -q "enforcing" /tmp/probe.log; then
    result $b enforce-starts PASS
  else
    result $b enforce-starts "FAIL no enforcing line: $(tail -c 2000 /tmp/probe.log | tr '\n' ' ')"
  fi
  : > /tmp/daemon.log
  out=$(in_container "/bin/swclient create /run/docker.sock" 2>&1)
  expect_stopped $b enforce-direct "$out" /run/docker.sock alive
  out=$(in_container "mkdir -p /tmp/e-$b && touch /tmp/e-$b/innocent.sock && mount --bind /run/docker.sock /tmp/e-$b/innocent.sock && /bin/swclient create /tmp/e-$b/innocent.sock" 2>&1)
  expect_stopped $b enforce-bind-mount "$out" /tmp/e-$b/innocent.sock alive
  out=$(in_container "ln -s /run/docker.sock /tmp/e-link-$b.sock && /bin/swclient create /tmp/e-link-$b.sock" 2>&1)
  expect_stopped $b enforce-symlink "$out" /tmp/e-link-$b.sock alive
  # a container whose cgroup did not exist when enforcement began: refused at once
  rmdir /sys/fs/cgroup/docker/$CID2 2>/dev/null
  out=$(sh -c "mkdir /sys/fs/cgroup/docker/$CID2 && echo \$\$ > /sys/fs/cgroup/docker/$CID2/cgroup.procs && exec unshare -m -p -f /bin/swclient create /run/docker.sock" 2>&1)
  expect_stopped $b enforce-new-container "$out" /run/docker.sock alive
  if [ $b != tracepoint ]; then
    out=$(in_container "/bin/swclient open /run/docker.sock" 2>&1)
    if echo "$out" | grep -q "No such device"; then
      result $b enforce-open "FAIL the open reached the socket: $out"
    elif [ $how = EPERM ] && ! echo "$out" | grep -q "Operation not permitted"; then
      result $b enforce-open "FAIL no EPERM: $out"
    else
      result $b enforce-open PASS
    fi
  fi
  out=$(/bin/swclient connect /run/docker.sock 2>&1)
  if echo "$out" | grep -q connected && grep -q "conn [1-9]" /tmp/daemon.log; then
    result $b enforce-host-spared PASS
  else
    result $b enforce-host-spared "FAIL the host was refused: $out"
  fi
  : > /tmp/daemon.log
  pinned=yes
  grep -q "enforcing only while this probe runs" /tmp/probe.log && pinned=no
  kill -9 $PROBE; wait $PROBE 2>/dev/null
  out=$(in_container "/bin/swclient create /run/docker.sock" 2>&1)
  if [ $pinned = no ]; then
    result $b enforce-after-probe-killed NOTPINNED
  else
    expect_stopped $b enforce-after-probe-killed "$out" /run/docker.sock dead
  fi
  said=$(/bin/sockwarden-probe uninstall --pin-dir $pins 2>&1 | tr '\n' ' ')
  out=$(in_container "/bin/swclient create /run/docker.sock" 2>&1)
  if echo "$out" | grep -q connected && [ ! -e $pins ]; then
    result $b enforce-uninstall PASS
  else
    sleep 3
    later=$(in_container "/bin/swclient create /run/docker.sock" 2>&1 | tr '\n' ' ')
    result $b enforce-uninstall "FAIL still refused after uninstall: $out; uninstall said: $said; 3 s later: $later; pins: $(ls $pins 2>&1 | tr '\n' ' ')"
  fi
  : > /tmp/daemon.log
}

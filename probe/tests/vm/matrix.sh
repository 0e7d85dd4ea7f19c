# One cell of the kernel matrix: every backend forced in turn (each that loads runs every
# scenario; each that does not must say why), then what auto chooses and why, then what
# each running backend costs. The host test compares the SW lines with what it expects of
# this kernel and lsm= list. `sw_backends=a,b` on the command line forces only those (the
# boot without `bpf` in lsm= forces only lsm: the others do not depend on lsm=).
. /lib.sh
start_daemon
echo 1 > /proc/sys/kernel/bpf_stats_enabled
backends="lsm fentry tracepoint kprobe"
only=$(sed -n 's/.*sw_backends=\([a-z,]*\).*/\1/p' /proc/cmdline | tr ',' ' ')
[ -n "$only" ] && backends=$only
for backend in $backends; do
  # tracepoint sees opens only with --detect-open; lsm and fentry see them anyway
  flags=""; [ $backend = tracepoint ] && flags=--detect-open
  if start_probe $backend $flags; then
    echo "SWLOAD $backend runs"
    run_scenarios $backend
    report_stats $backend
    stop_probe
    run_enforce $backend
    report_bench $backend 2 $flags
  else
    wait $PROBE 2>/dev/null
    # the whole refusal, verifier output included (it spans lines)
    why=$(sed -n '/cannot run on this node/,$p' /tmp/probe.log | tr '\n' ' ' | sed 's/.*cannot run on this node: //')
    # long (a verifier log): its first words and its last, where the verifier says why
    [ ${#why} -gt 2400 ] && why="$(echo "$why" | cut -c1-400) ... $(echo "$why" | tail -c 2000)"
    echo "SWLOAD $backend refused ${why:-$(tail -c 300 /tmp/probe.log | tr '\n' ' ')}"
  fi
done
echo 0 > /proc/sys/kernel/bpf_stats_enabled

# fmod_ret on the security_* functions (how the fentry backend refuses), where fentry is forced
case " $backends " in
  *" fentry "*)
    if /bin/sockwarden-probe check-fmod-ret >/tmp/fmod.log 2>&1; then
      echo "SWFMOD attaches"
    else
      echo "SWFMOD refused $(tr '\n' ' ' </tmp/fmod.log)"
    fi ;;
esac

# auto: which backend, why, the kernel facts it logged, and that it sees
if start_probe auto; then
  echo "SWFACTS $(grep 'kernel facts' /tmp/probe.log | head -n1)"
  echo "SWCHOSE $(grep 'backend chosen' /tmp/probe.log | head -n1)"
  in_container "/bin/swclient connect /run/docker.sock" >/dev/null
  if wait_for /tmp/findings.json "\"id\":\"$CID\"" 20; then
    result auto sees PASS
  else
    result auto sees "FAIL no finding"
  fi
  stop_probe
else
  echo "SWCHOSE none: $(tail -c 400 /tmp/probe.log | tr '\n' ' ')"
fi
kill $DAEMON

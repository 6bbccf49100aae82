# Sourced by tests/tmux_chat.sh and tests/tmux_tui.sh once they have set
# SOCK, the name of the private tmux server they start. However the
# script ends (every step passed, a step failed or timed out, a signal,
# even kill -9), that server goes, and so does everything running in its
# panes: quill must not be left running unseen after a failed run.

tm() { tmux -L "$SOCK" "$@"; }

# Tells what runs in the live panes to end, then kills the server. Killing
# the server alone only hangs the panes' terminals up, and a program that
# misses the hangup (as quill tui once did) runs on with nobody to see it.
# tmux 3.3a leaves the server's socket file behind: it goes too.
stop_tmux() {
  local pid
  for pid in $(tm list-panes -a -F '#{?pane_dead,,#{pane_pid}}' 2>/dev/null); do
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  tm kill-server >/dev/null 2>&1 || true
  rm -f "${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/$SOCK"
}

# kill -9 runs no trap: a watchdog waits for this shell to go, then stops
# the server. It runs in a session of its own, so that a signal to this
# script's process group leaves it to do its job, and it holds none of
# the script's output, so whoever reads that output (tests/*.rs) does not
# wait for it.
setsid bash -c "SOCK='$SOCK'; $(declare -f tm stop_tmux)
  while kill -0 $$ 2>/dev/null; do sleep 1; done
  stop_tmux" </dev/null >/dev/null 2>&1 &
TMUX_WATCHDOG=$!

trap 'stop_tmux; kill "$TMUX_WATCHDOG" 2>/dev/null || true' EXIT
# A signal exits through the EXIT trap, with the status a kill by it gives.
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

#!/usr/bin/env bash
# Drives `quill tui` in a real terminal under tmux, as a person would:
# wait for the model, send a message and wait for the reply, open and close
# the help and the settings (raising the temperature), write a chapter in
# Write mode, save both sessions and see them in the picker, resize, and
# quit with Ctrl-C; then check that the terminal is back to normal (main
# screen, canonical mode, echo); and the same after a panic on the UI
# thread and on the engine thread (QUILL_TUI_TEST_PANIC), and after a
# SIGTERM. Run by tests/tui.rs (tmux_smoke_test).
#
# usage: tests/tmux_tui.sh QUILL_BINARY MODEL SCRATCH_DIR
set -euo pipefail

QUILL=$1
MODEL=$2
DIR=$3
# The shipped persona and story prompt, as quill chat and quill write read them.
PROMPTS="$(cd "$(dirname "$0")/.." && pwd)/prompts"
mkdir -p "$DIR"
# A private server, so the test neither sees nor disturbs anyone's tmux;
# tmux_cleanup.sh defines `tm` (tmux on it) and makes sure it goes.
SOCK="quill-tui-test-$$"
. "$(dirname "$0")/tmux_cleanup.sh"

T=tui
screen() { tm capture-pane -p -t "$T" 2>/dev/null || true; }
fail() {
  echo "FAIL: $*"
  echo "----- screen -----"
  screen
  exit 1
}
# wait_for REGEX [SECONDS]: until a line of the screen matches.
wait_for() {
  local pat=$1 limit=${2:-10}
  local end=$((SECONDS + limit))
  while ((SECONDS < end)); do
    if screen | grep -qE -- "$pat"; then return 0; fi
    sleep 0.1
  done
  fail "timed out after ${limit}s waiting for /$pat/"
}
# gone REGEX [SECONDS]: until no line matches.
gone() {
  local pat=$1 limit=${2:-5}
  local end=$((SECONDS + limit))
  while ((SECONDS < end)); do
    if ! screen | grep -qE -- "$pat"; then return 0; fi
    sleep 0.1
  done
  fail "/$pat/ still on screen after ${limit}s"
}
key() { tm send-keys -t "$T" "$@"; }
type_text() { tm send-keys -t "$T" -l -- "$1"; }
# The message line after a generation: "N tokens, X tokens/s (why)".
DONE='^ [0-9]+ tokens, [0-9.]+ tokens/s \('

# A shell runs quill, then reports how it left the terminal: exit status,
# and whether canonical mode and echo are back on (raw mode turns both
# off). Ctrl-C cannot kill the shell: in raw mode it is a key for quill.
tm new-session -d -s tui -x 120 -y 40 \
  "env QUILL_DATA_DIR='$DIR/data' QUILL_CACHE_DIR='$DIR/cache' '$QUILL' tui --model '$MODEL' --seed 1 -n 40 \
     --persona '$PROMPTS/assistant.toml' --prompt-file '$PROMPTS/lighthouse.toml'; \
   echo \"EXIT=\$?\"; stty -a | tr ' ;' '\n\n' | grep -xE -- '-?(icanon|echo)' | tr '\n' ' '; echo; sleep 60"

# 1. Start-up: tabs, panes, and a status bar with the model and sampler.
wait_for 'ready: persona opening of [0-9]+ tokens' 30
wait_for '^ Quill +Chat +Write +persona: assistant'
wait_for 'Conversation'
wait_for 'rand-v7\.safetensors · RWKV-7 · f32 · [0-9]+ threads │ [0-9]+ tokens in state · state [0-9.]+ KiB'
wait_for 'temperature 1 · top-p 0\.3 · top-k 0 .* max 40 tokens'

# 2. A message and its streamed reply.
type_text "hello there"
wait_for '│hello there'
key Enter
wait_for '│  hello there'
wait_for '│Assistant'
wait_for "$DONE" 20
gone '│hello there'

# 3. Help overlay: ? opens it, Esc closes it.
key '?'
wait_for '┌ Keys'
wait_for 'Ctrl-Q +quit'
key Escape
gone '┌ Keys'

# 4. Settings: Ctrl-T, Right raises the temperature, Esc closes.
key C-t
wait_for 'Settings \(Chat\)'
key Right
wait_for 'temperature = 1\.1'
key Escape
gone 'Settings \(Chat\)'
wait_for '^ temperature 1\.1 · top-p 0\.3'

# 5. Write mode: a chapter from the guidance box.
key Tab
wait_for 'Story — The Keeper of Gull Rock'
wait_for '│# The Keeper of Gull Rock'
wait_for '│The lighthouse on Gull Rock had been dark'
wait_for 'top-p 0\.7 .* max 400 tokens'
type_text "a storm"
key Enter
wait_for '│## Chapter 1: The Crossing' 10
wait_for "$DONE" 30

# 6. Save the story and the chat; both are in the picker.
key C-s
wait_for 'Save session as'
type_text "smoke-story"
key Enter
wait_for 'saved story `smoke-story`'
key Tab
wait_for 'Conversation'
key C-s
type_text "smoke-chat"
key Enter
wait_for 'saved session `smoke-chat`'
wait_for 'session: smoke-chat'
[ -f "$DIR/data/sessions/smoke-story.qs" ] || fail "no smoke-story.qs in $DIR/data/sessions"
[ -f "$DIR/data/sessions/smoke-chat.qs" ] || fail "no smoke-chat.qs in $DIR/data/sessions"
key C-o
wait_for 'Open a saved session'
wait_for '│smoke-story +Write'
wait_for '│smoke-chat +Chat'
key Escape
gone 'Open a saved session'

# 7. A resize redraws to the new size.
tm resize-window -t tui -x 90 -y 30
wait_for '^└ Enter sends'
[ "$(screen | wc -l)" -eq 30 ] || fail "expected 30 lines after the resize"
wait_for '^ rand-v7\.safetensors'

# 8. Ctrl-C when idle quits, and the terminal is restored.
key C-c
wait_for '^EXIT=0' 10
gone 'Conversation'
wait_for '^icanon echo'

# 9. A panic on the UI thread or on the engine thread: the terminal is
#    restored and the message is on the screen, not lost with the
#    alternate screen.
for where in ui engine; do
  T="panic-$where"
  tm new-session -d -s "$T" -x 120 -y 40 \
    "env QUILL_TUI_TEST_PANIC=$where QUILL_DATA_DIR='$DIR/data' QUILL_CACHE_DIR='$DIR/cache' RUST_BACKTRACE=0 '$QUILL' tui --model '$MODEL' --seed 1; \
     echo \"EXIT=\$?\"; stty -a | tr ' ;' '\n\n' | grep -xE -- '-?(icanon|echo)' | tr '\n' ' '; echo; sleep 60"
  wait_for "^EXIT=[1-9]" 30
  wait_for "QUILL_TUI_TEST_PANIC=$where: panicking"
  if [ "$where" = ui ]; then
    wait_for "^thread 'main' .*panicked at"
  else
    # Caught on its thread; the app quits with it as a one-line error.
    wait_for '^quill: error: quill tui: the engine thread panicked at'
  fi
  wait_for '^icanon echo'
  gone 'Conversation'
done

# 10. SIGTERM (a `kill`): quill quits as if asked, restoring the terminal.
T=term
tm new-session -d -s "$T" -x 120 -y 40 \
  "env QUILL_DATA_DIR='$DIR/data' QUILL_CACHE_DIR='$DIR/cache' '$QUILL' tui --model '$MODEL' --seed 1; \
   echo \"EXIT=\$?\"; stty -a | tr ' ;' '\n\n' | grep -xE -- '-?(icanon|echo)' | tr '\n' ' '; echo; sleep 60"
wait_for 'ready: persona opening' 30
SHELL_PID=$(tm display-message -p -t "$T" '#{pane_pid}')
QUILL_PID=$(pgrep -P "$SHELL_PID" | head -n 1)
[ -n "$QUILL_PID" ] || fail "cannot find quill's process id"
kill -TERM "$QUILL_PID"
wait_for '^EXIT=0' 10
wait_for '^icanon echo'
gone 'Conversation'
echo "tmux_tui: all steps passed"

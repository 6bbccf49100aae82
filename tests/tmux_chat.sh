#!/usr/bin/env bash
# Drives `quill chat` in a real terminal under tmux, as a person would:
# type a message and wait for the reply, stop a long reply with Ctrl-C and
# check the chat goes on, clear a typed line with Ctrl-C, /save, and quit
# with Ctrl-D. Run by tests/chat.rs (tmux_interactive_session).
#
# usage: tests/tmux_chat.sh QUILL_BINARY MODEL SCRATCH_DIR
set -euo pipefail

QUILL=$1
MODEL=$2
DIR=$3
mkdir -p "$DIR"
# A private server, so the test neither sees nor disturbs anyone's tmux;
# tmux_cleanup.sh defines `tm` (tmux on it) and makes sure it goes.
SOCK="quill-chat-test-$$"
. "$(dirname "$0")/tmux_cleanup.sh"

screen() { tm capture-pane -p -J -S -1000 -t chat 2>/dev/null || true; }
fail() {
  echo "FAIL: $*"
  echo "----- screen -----"
  screen | tail -n 60
  exit 1
}
# wait_for REGEX [SECONDS [MIN_COUNT]]: until MIN_COUNT lines match.
wait_for() {
  local pat=$1 limit=${2:-10} want=${3:-1}
  local end=$((SECONDS + limit))
  while ((SECONDS < end)); do
    local n
    n=$(screen | grep -cE -- "$pat" || true)
    if ((n >= want)); then return 0; fi
    sleep 0.1
  done
  fail "timed out after ${limit}s waiting for $want line(s) matching /$pat/"
}
# Each answered line ends with a fresh `User:` prompt; waiting for the
# next one before typing keeps keys from arriving mid-reply.
PROMPTS=1
next_prompt() {
  PROMPTS=$((PROMPTS + 1))
  wait_for '^User:' "${1:-10}" "$PROMPTS"
}
REPLY_NOTE='^\[[0-9]+ tokens in'
alive() { [ "$(tm display-message -p -t chat '#{pane_dead}')" = "0" ]; }
type_line() { tm send-keys -t chat -l -- "$1"; tm send-keys -t chat Enter; }
# exit_status: how quill left, as its wrapper shell recorded it (see
# `launch`). Asking tmux for `#{pane_dead_status}` is not reliable: tmux
# 3.3a marks a pane dead when its terminal closes and sometimes never
# reaps the process (it stays a zombie), so the status never arrives.
exit_status() {
  local end=$((SECONDS + 10))
  while ((SECONDS < end)); do
    if [ -s "$DIR/exit-status" ]; then cat "$DIR/exit-status"; return; fi
    sleep 0.1
  done
  echo "unknown (the wrapper shell never wrote it)"
}
# launch ENV ARGS: starts quill chat in the pane under a bash that waits for
# it and writes its exit status. The shell traps SIGINT (a handler, not
# `ignore`, so quill does not inherit it) so that a Ctrl-C meant for quill
# during a reply cannot end the shell; quill's own handling decides.
launch() {
  rm -f "$DIR/exit-status"
  tm new-session -d -s chat -x 150 -y 50 \
    "bash -c 'trap : INT; env $1 QUILL_DATA_DIR=\"$DIR/data\" QUILL_CACHE_DIR=\"$DIR/cache\" \"$QUILL\" chat --model \"$MODEL\" $2; echo \$? > \"$DIR/exit-status\"'" \; \
    set-option -t chat remain-on-exit on
}

# remain-on-exit keeps the pane (and its screen) after quill ends.
launch "" "--seed 1 -n 40 --top-p 0.9"

wait_for '/help lists commands' 20
wait_for '^User:' 5
# On a terminal the prompt and notes are coloured...
tm capture-pane -e -p -t chat | grep -q $'\e\\[' || fail "no colour on a terminal"

# 1. A message gets a streamed reply, a tokens/s note, and a new prompt.
type_line "hello there"
wait_for "$REPLY_NOTE" 15
next_prompt

# 2. Multi-line input: a trailing backslash continues the line, and a
#    bracketed paste with a line break stays one message.
tm send-keys -t chat -l -- 'first line \'
tm send-keys -t chat Enter
tm send-keys -t chat -l -- "second line"
tm send-keys -t chat Enter
wait_for "$REPLY_NOTE" 15 2
next_prompt
tm set-buffer -b paste -- "$(printf 'pasted one\npasted two')"
tm paste-buffer -p -d -b paste -t chat
sleep 0.3
tm send-keys -t chat Enter
wait_for "$REPLY_NOTE" 15 3
next_prompt
wait_for '^pasted two' 1

# 3. Ctrl-C during a long reply stops it; the chat goes on. With think on
#    only `\n\nUser:` ends a reply, so random weights run to the limit.
type_line "/set max_tokens=200000"
wait_for 'max_tokens=200000' 5
next_prompt
type_line "/think on"
wait_for 'reason' 5
next_prompt
type_line "write forever"
wait_for '^Assistant: <think' 10
sleep 0.7
alive || fail "quill died during the long reply"
tm send-keys -t chat C-c
wait_for 'stopped' 10
alive || fail "Ctrl-C during a reply ended the chat"
next_prompt
type_line "/show"
wait_for '^state +[0-9]+ tokens' 5
next_prompt
screen | grep -qE '^processed +[0-9]+ tokens' || fail "/show lacks the processed count"

# 4. Ctrl-C on a line with text clears it and does not quit.
tm send-keys -t chat -l -- "never sent"
sleep 0.3
tm send-keys -t chat C-c
sleep 0.3
alive || fail "Ctrl-C on a non-empty line ended the chat"
type_line "/show"
wait_for '^state +[0-9]+ tokens' 5 2
next_prompt

# 5. /save writes the session file.
type_line "/save tmux-test"
wait_for 'saved session `tmux-test`' 10
[ -s "$DIR/data/sessions/tmux-test.qs" ] || fail "no session file"

# 6. Ctrl-D on the empty prompt quits cleanly.
tm send-keys -t chat C-d
end=$((SECONDS + 10))
while alive && ((SECONDS < end)); do sleep 0.1; done
alive && fail "Ctrl-D did not end the chat"
status=$(exit_status)
[ "$status" = "0" ] || fail "quill exited with status $status"

# 7. The history file kept what was typed (but not the cleared line).
grep -q "hello there" "$DIR/data/history" || fail "history file lacks the message"
grep -q "pasted one" "$DIR/data/history" || fail "history file lacks the pasted message"
if grep -q "never sent" "$DIR/data/history"; then fail "a cleared line went into history"; fi

# 8. A second start: the opening comes from the cache, --session resumes
#    the saved chat, NO_COLOR is honoured, and Ctrl-C on the empty prompt
#    quits cleanly.
tm kill-session -t chat
launch "NO_COLOR=1" "--session tmux-test"
wait_for 'loaded from cache' 20
wait_for 'loaded session `tmux-test`' 10
wait_for '^User:' 5
# ...but not with NO_COLOR.
if tm capture-pane -e -p -t chat | grep -q $'\e'; then fail "colour despite NO_COLOR"; fi
tm send-keys -t chat C-c
end=$((SECONDS + 10))
while alive && ((SECONDS < end)); do sleep 0.1; done
alive && fail "Ctrl-C on an empty line did not end the chat"
status=$(exit_status)
[ "$status" = "0" ] || fail "quill exited with status $status after Ctrl-C"

echo "tmux chat: all checks passed"

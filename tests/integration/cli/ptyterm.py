#!/usr/bin/env python3
"""Runs a command on a pseudo-terminal and prints the screen it leaves (test infrastructure).

The command's stdin, stdout and stderr are the pty, as when a person runs it in a terminal of
--cols x --rows. Everything it writes is kept (--raw FILE) and played through a small terminal
emulator, which understands what imagefs and common programs write: printable text (wrapping at
the last column), CR, LF, BS, and the CSI sequences for cursor moves (A B C D E F G H f), erase in
line (K) and erase in display (J); colours and modes (m, h, l) are ignored, and any other
sequence is an error (the test should know what it is reading). As in a real terminal, lines that
scrolled off the top can no longer be reached by moving the cursor up.

Prints the whole screen, scrollback first, one line per row with trailing blanks removed, and
exits with the command's exit status.

  ptyterm.py [--cols N] [--rows N] [--raw FILE] [--screen FILE] -- COMMAND [ARGS...]
  ptyterm.py --replay FILE [--cols N] [--rows N]     # interpret bytes recorded earlier
"""

import argparse
import os
import pty
import re
import select
import struct
import sys
import termios
import fcntl


class Terminal:
    def __init__(self, cols, rows):
        self.cols, self.rows = cols, rows
        self.lines = [[]]  # every row ever shown; the screen is the last `rows` of them
        self.row = 0
        self.col = 0
        self.pending_wrap = False

    def top(self):
        return max(0, len(self.lines) - self.rows)

    def _ensure_row(self, row):
        while len(self.lines) <= row:
            self.lines.append([])

    def _line_feed(self):
        self.row += 1
        self._ensure_row(self.row)  # at the bottom: the screen scrolls, the top row goes back

    def put(self, ch):
        if self.pending_wrap:
            self.pending_wrap = False
            self.col = 0
            self._line_feed()
        line = self.lines[self.row]
        while len(line) <= self.col:
            line.append(" ")
        line[self.col] = ch
        if self.col == self.cols - 1:
            self.pending_wrap = True  # the next character goes on the next row
        else:
            self.col += 1

    def csi(self, params, final):
        private = params.startswith("?")
        nums = [int(p) if p else 0 for p in params.lstrip("?").split(";")] if params else []
        n = nums[0] if nums and nums[0] > 0 else 1
        self.pending_wrap = False
        if final in "mhl" or private:
            return
        if final == "A":
            self.row = max(self.top(), self.row - n)
        elif final == "B":
            self.row = min(self.top() + self.rows - 1, self.row + n)
            self._ensure_row(self.row)
        elif final == "C":
            self.col = min(self.cols - 1, self.col + n)
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final == "E":
            self.row = min(self.top() + self.rows - 1, self.row + n)
            self._ensure_row(self.row)
            self.col = 0
        elif final == "F":
            self.row = max(self.top(), self.row - n)
            self.col = 0
        elif final == "G":
            self.col = min(self.cols - 1, n - 1)
        elif final in "Hf":
            r = nums[0] if len(nums) > 0 and nums[0] > 0 else 1
            c = nums[1] if len(nums) > 1 and nums[1] > 0 else 1
            self.row = self.top() + min(r, self.rows) - 1
            self._ensure_row(self.row)
            self.col = min(c, self.cols) - 1
        elif final == "K":
            mode = nums[0] if nums else 0
            line = self.lines[self.row]
            if mode == 0:
                del line[self.col:]
            elif mode == 1:
                for i in range(min(self.col + 1, len(line))):
                    line[i] = " "
            else:
                line.clear()
        elif final == "J":
            mode = nums[0] if nums else 0
            top = self.top()
            if mode == 0:
                del self.lines[self.row][self.col:]
                for r in range(self.row + 1, len(self.lines)):
                    self.lines[r] = []
            elif mode == 1:
                for r in range(top, self.row):
                    self.lines[r] = []
                for i in range(min(self.col + 1, len(self.lines[self.row]))):
                    self.lines[self.row][i] = " "
            else:
                for r in range(top, len(self.lines)):
                    self.lines[r] = []
        else:
            raise ValueError(f"unexpected escape sequence ESC[{params}{final}")

    def feed(self, data):
        text = data.decode("utf-8", errors="replace")
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = re.compile(r"\[([0-9;?]*)([@-~])").match(text, i + 1)
                if m:
                    self.csi(m.group(1), m.group(2))
                    i = m.end()
                    continue
                if i + 1 < len(text) and text[i + 1] in "78=>()":
                    i += 2 if text[i + 1] in "78=>" else 3
                    continue
                raise ValueError(f"unexpected escape {text[i:i + 8]!r}")
            if ch == "\r":
                self.col = 0
                self.pending_wrap = False
            elif ch == "\n":
                self.pending_wrap = False
                self._line_feed()
            elif ch == "\b":
                self.col = max(0, self.col - 1)
                self.pending_wrap = False
            elif ch == "\t":
                self.col = min(self.cols - 1, (self.col // 8 + 1) * 8)
            elif ch == "\x07":
                pass
            elif ord(ch) < 32 or ord(ch) == 127:
                raise ValueError(f"unexpected control character {ch!r}")
            else:
                self.put(ch)
            i += 1

    def screen(self):
        rows = ["".join(line).rstrip() for line in self.lines]
        while rows and not rows[-1]:
            rows.pop()
        return rows


def run(argv, cols, rows):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["TERM"] = "xterm"
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"ptyterm: cannot run {argv[0]}: {e}\n".encode())
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    out = bytearray()
    status = None
    while True:
        try:
            ready, _, _ = select.select([fd], [], [], 1.0)
        except InterruptedError:
            continue
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: every writer is gone
                break
            if not chunk:
                break
            out += chunk
        else:
            done, wait_status = os.waitpid(pid, os.WNOHANG)
            if done:  # ended, though something it started may hold the pty open
                status = wait_status
                break
    if status is None:
        _, status = os.waitpid(pid, 0)
    os.close(fd)
    return bytes(out), status


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cols", type=int, default=100)
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--raw", help="write the bytes the command wrote here")
    p.add_argument("--replay", help="interpret this file of recorded bytes instead of running")
    p.add_argument("command", nargs="*")
    a = p.parse_args()
    status = 0
    if a.replay:
        with open(a.replay, "rb") as f:
            data = f.read()
    else:
        if not a.command:
            p.error("give a command (after --)")
        data, wait_status = run(a.command, a.cols, a.rows)
        status = os.waitstatus_to_exitcode(wait_status)
        if status < 0:
            status = 128 - status
    if a.raw:
        with open(a.raw, "wb") as f:
            f.write(data)
    term = Terminal(a.cols, a.rows)
    term.feed(data)
    sys.stdout.write("".join(line + "\n" for line in term.screen()))
    return status


if __name__ == "__main__":
    sys.exit(main())

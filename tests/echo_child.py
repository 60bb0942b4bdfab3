"""A child process for tests/unit/adapters/test_job_types.py: ``python -m tests.echo_child``
(started by ``adapters.child.spawn``, or forked by ``spawn_warm``, which calls ``main()``) receives a typed spec, prints a line that is not a reply, and
sends the spec's words back one reply at a time; ``hang`` waits for its parent to go."""
from __future__ import annotations

import sys
import time

from pydantic import BaseModel

from adapters.child import receive, send


class Spec(BaseModel):
    words: list[str]
    hang: bool = False
    exit_code: int = 0
    crash: bool = False


class Reply(BaseModel):
    word: str


def main() -> None:
    spec = receive(Spec)
    print("a library chatting on stdout")
    sys.stderr.write("to stderr\n")
    for w in spec.words:
        send(Reply(word=w))
    while spec.hang:
        time.sleep(0.1)
    if spec.exit_code:
        sys.exit(spec.exit_code)
    if spec.crash:
        raise RuntimeError("a crash in the child")


if __name__ == "__main__":
    main()

"""How a run is asked to stop: the first Ctrl-C, SIGTERM or SIGHUP ends it as a spent budget
would (final checkpoint, policy, summary); a second one stops it at once."""

import contextlib
import os
import signal
import sys
import threading

STOP_REASONS = {signal.SIGINT: "interrupted", signal.SIGTERM: "sigterm", signal.SIGHUP: "sighup"}


class StopAtOnce(KeyboardInterrupt):
    """A second stop signal (SIGTERM or SIGHUP; a second Ctrl-C is a plain KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def detach_from_a_closed_terminal(trainer) -> None:
    """After SIGHUP the terminal may be gone, and every print would raise OSError (EIO): the
    rest of the run writes its output to /dev/null instead (its files hold everything)."""
    devnull = open(os.devnull, "w")
    sys.stdout = sys.stderr = trainer.log.stream = devnull


@contextlib.contextmanager
def stop_on_signals(trainer):
    """The first Ctrl-C (SIGINT), SIGTERM (Kubernetes, `ray job stop`, systemd, Docker) or SIGHUP
    (a closed terminal) asks the trainer to stop as a spent budget would (final checkpoint,
    policy, summary); a second one raises KeyboardInterrupt at once. A signal that was ignored
    when the program started (`nohup`, a shell's background job) stays ignored. These handlers
    replace the one ray.init installs for SIGTERM (sys.exit, which wrote nothing). Off the main
    thread (where Python allows no handlers) the signals keep their handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        if trainer.stop_request:
            raise KeyboardInterrupt if signum == signal.SIGINT else StopAtOnce(signum)
        trainer.stop_request = STOP_REASONS[signum]
        again = "Ctrl-C again" if signum == signal.SIGINT else "a second signal"
        try:
            print(
                f"\n{trainer.stop_request}: finishing (final checkpoint, policy, summary); {again} stops at once",
                flush=True,
            )
        except OSError:
            detach_from_a_closed_terminal(trainer)

    previous = {signum: signal.getsignal(signum) for signum in STOP_REASONS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

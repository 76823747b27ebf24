"""org.aptostree.AptOstree1.Transaction: converts types and delegates to `Transaction`."""

from typing import Any

from dasbus.server.template import BasicInterfaceTemplate
from dasbus.typing import Dict, Str

from apt_ostree import keys
from apt_ostree.daemon.dbus_typing import (
    UInt64,
    Variant,
    accepts_additional_arguments,
    dbus_interface,
    dbus_signal,
)
from apt_ostree.daemon.transaction import Transaction
from apt_ostree.daemon.variants import wire_variants
from apt_ostree.system.results import Outcome


@dbus_interface(keys.INTERFACE_TRANSACTION)
class TransactionInterface(BasicInterfaceTemplate):  # type: ignore[misc]
    """Signals in the order the worker reports; Finished last, then the object goes away."""

    @property
    def txn(self) -> Transaction:
        impl: Transaction = self.implementation
        return impl

    def connect_signals(self) -> None:
        t = self.txn
        t.message.connect(self.Message)
        t.task_begin.connect(self.TaskBegin)
        t.task_end.connect(self.TaskEnd)
        t.percent.connect(self.PercentProgress)
        t.download.connect(self.DownloadProgress)
        t.live.connect(self.LiveMessage)
        t.result.connect(self._result)
        t.finished.connect(self.Finished)

    def _result(self, outcome: Outcome) -> None:
        self.Result(wire_variants(outcome.to_wire()))

    @property
    def Title(self) -> str:
        return self.txn.title

    @property
    def InitiatingClient(self) -> str:
        return str(self.txn.caller)

    @accepts_additional_arguments
    def Start(self, *, call_info: dict[str, Any]) -> None:
        """Run the transaction; call it after subscribing to the signals."""
        self.txn.start()

    @accepts_additional_arguments
    def Cancel(self, *, call_info: dict[str, Any]) -> None:
        """Stop the transaction: no new deployment is left."""
        self.txn.cancel_by(call_info["sender"])

    @dbus_signal
    def Message(self, text: str) -> None:
        """A line of information."""

    @dbus_signal
    def TaskBegin(self, title: str) -> None:
        """A named step starts."""

    @dbus_signal
    def TaskEnd(self, title: str, seconds: float) -> None:
        """The step ends."""

    @dbus_signal
    def PercentProgress(self, title: str, done: UInt64, total: UInt64) -> None:
        """Countable progress within the current step."""

    @dbus_signal
    def DownloadProgress(
        self, done_bytes: UInt64, total_bytes: UInt64, bytes_per_second: float, final: bool
    ) -> None:
        """Download progress within the current step."""

    @dbus_signal
    def LiveMessage(self, text: str, final: bool) -> None:
        """A status line that the next one replaces (pull counters)."""

    @dbus_signal
    def Result(self, outcome: Dict[Str, Variant]) -> None:
        """What the transaction did, before Finished: `changed` (b), `lines` (as: what the
        CLI prints), `checksum`, `version` (s: the commit it is about), `diff` (a{sv}: the
        package changes, as DbDiff), `then` (a{sv}: the next step's outcome, for install
        --apply-live)."""

    @dbus_signal
    def Finished(self, success: bool, error_message: str, error_name: str) -> None:
        """The transaction ended; error_name is an org.aptostree.AptOstree1.Error.* name."""

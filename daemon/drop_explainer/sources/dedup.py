"""Two small, pure de-duplicators for flow streams.

``ReplayFilter`` removes exact repeats. After a reconnect the Hubble source
resumes with ``since`` = the newest flow time it had received, so the
server sends again every flow at (or, with an overlap, shortly before)
that instant; those repeats must not reach the consumer at all.

``ReportClassifier`` does not remove anything. It answers the question of
cilium's double reporting (reference hubble.md section 5.1): one denied
packet usually yields two events on the enforcing node (a policy-verdict
event and a drop event, microseconds apart), and a blocked client
retransmits its SYN (after 1 s, 2 s, 4 s ... up to 64 s apart with Linux
defaults). Our Flow record has no event type, so the classifier works on
what it has:

- packet key = (node, source IP, destination IP, protocol, source port,
  destination port, verdict). Direction is left out on purpose: Hubble
  derives it differently for the two events of one packet.
- a report is a *new packet* unless a report with the same packet key and
  the same TCP flags was seen within ``packet_window_ns`` (default 50 ms,
  far below TCP's 200 ms minimum retransmit timeout);
- a report is a *new connection attempt* unless a report with the same
  packet key was seen within ``attempt_window_ns`` of the previous one
  (default 70 s, longer than the largest gap between SYN retransmits with
  the default tcp_syn_retries=6). The window slides: each retransmit
  extends it.

``ReportClassifier.count`` applies the answer to the Flow: packets=1 for a
new packet and 0 for the second report of the same packet; connections=1
for a new attempt and 0 for retransmits and duplicate events. Sums of
``packets`` then count distinct packets and sums of ``connections`` count
distinct attempts, whichever events Cilium was configured to emit.

Both keep bounded memory: entries expire with their window, and a hard cap
evicts the oldest first (the cost of eviction is a rare over-count, never
a crash or an unbounded map).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Final, TypeVar

from drop_explainer.flows import model

_MS: Final = 1_000_000
_S: Final = 1_000_000_000

_K = TypeVar("_K")
ReplayKey = tuple[object, ...]
PacketKey = tuple[object, ...]


def replay_key(flow: model.Flow) -> ReplayKey:
    """Everything that tells two reports apart, time first."""
    src, dst = flow.source, flow.destination
    return (flow.time_ns, flow.node, src.ip, dst.ip, flow.protocol, flow.source_port, flow.destination_port,
            flow.tcp_flags, flow.verdict, flow.drop_reason, flow.direction, src.identity, dst.identity,
            flow.is_reply)


def packet_key(flow: model.Flow) -> PacketKey:
    return (flow.node, flow.source.ip, flow.destination.ip, flow.protocol, flow.source_port,
            flow.destination_port, flow.verdict)


class ReplayFilter:
    """Says whether a flow was already seen, remembering recent ones only.

    Keys older than ``window_ns`` behind the newest time seen are forgotten,
    and at most ``max_entries`` are kept; a resume must therefore replay no
    further back than the window (the Hubble source's resume overlap is
    well inside it).
    """

    def __init__(self, *, window_ns: int = 10 * _S, max_entries: int = 200_000) -> None:
        self.window_ns = window_ns
        self.max_entries = max_entries
        self._seen: dict[ReplayKey, int] = {}
        self._order: deque[tuple[int, ReplayKey]] = deque()
        self._newest = 0

    def __len__(self) -> int:
        return len(self._seen)

    def is_repeat(self, flow: model.Flow) -> bool:
        """True if this exact report was seen; otherwise remember it."""
        key = replay_key(flow)
        if key in self._seen:
            return True
        t = flow.time_ns
        self._seen[key] = t
        self._order.append((t, key))
        self._newest = max(self._newest, t)
        self._expire()
        return False

    def _expire(self) -> None:
        horizon = self._newest - self.window_ns
        order, seen = self._order, self._seen
        while order and (order[0][0] < horizon or len(seen) > self.max_entries):
            _, key = order.popleft()
            seen.pop(key, None)


@dataclass(frozen=True, slots=True)
class Novelty:
    """What one report adds: a packet not seen yet, a connection attempt not seen yet."""

    new_packet: bool
    new_connection: bool


class ReportClassifier:
    """Classifies reports as new packets / new connection attempts (see the module doc)."""

    def __init__(
        self, *, packet_window_ns: int = 50 * _MS, attempt_window_ns: int = 70 * _S, max_entries: int = 100_000
    ) -> None:
        self.packet_window_ns = packet_window_ns
        self.attempt_window_ns = attempt_window_ns
        self.max_entries = max_entries
        # Order is refresh order (move_to_end on every sighting), so the
        # first entry is always the stalest. OrderedDict, not dict: a plain
        # dict that keeps deleting from the front makes finding the first
        # entry slower and slower until it resizes.
        self._packets: OrderedDict[tuple[PacketKey, frozenset[str]], int] = OrderedDict()
        self._attempts: OrderedDict[PacketKey, int] = OrderedDict()
        self._newest = 0

    def classify(self, flow: model.Flow) -> Novelty:
        key = packet_key(flow)
        t = flow.time_ns
        self._newest = max(self._newest, t)
        new_packet = _refresh(self._packets, (key, flow.tcp_flags), t, self.packet_window_ns)
        new_connection = _refresh(self._attempts, key, t, self.attempt_window_ns)
        _expire(self._packets, self._newest - self.packet_window_ns, self.max_entries)
        _expire(self._attempts, self._newest - self.attempt_window_ns, self.max_entries)
        return Novelty(new_packet=new_packet, new_connection=new_connection)

    def count(self, flow: model.Flow) -> model.Flow:
        """The flow with packets/connections set from its novelty (1 = new, 0 = seen)."""
        novelty = self.classify(flow)
        packets, connections = int(novelty.new_packet), int(novelty.new_connection)
        if packets == flow.packets and connections == flow.connections:
            return flow
        return replace(flow, packets=packets, connections=connections)


def _refresh(table: OrderedDict[_K, int], key: _K, t: int, window: int) -> bool:
    """Record a sighting at t; True if the key was not seen within window of t."""
    previous = table.get(key)
    if previous is None:
        table[key] = t
        return True
    table[key] = max(t, previous)
    table.move_to_end(key)
    return abs(t - previous) > window


def _expire(table: OrderedDict[_K, int], horizon: int, max_entries: int) -> None:
    while table:
        if table[next(iter(table))] >= horizon and len(table) <= max_entries:
            return
        table.popitem(last=False)


def is_aggregate(flow: model.Flow) -> bool:
    """Records that already carry their own counts (Calico's buckets) are not reclassified."""
    return flow.origin == "calico" or flow.packets > 1


class FileCounter:
    """Counts a saved flow file's records as the live Hubble source counts its stream."""

    def __init__(self) -> None:
        self._reports = ReportClassifier()

    def count(self, flow: model.Flow) -> model.Flow:
        return flow if is_aggregate(flow) else self._reports.count(flow)

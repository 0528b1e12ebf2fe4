"""Readable words for datapath drop reasons that no policy caused.

A drop for "no route" or "CT: map insertion failed" is not a NetworkPolicy
problem, and blaming a policy for it would send the on-call engineer the
wrong way; so we say what the reason means instead.
"""

from __future__ import annotations

_MEANINGS: dict[str, str] = {
    "INVALID_SOURCE_MAC": "the source MAC address is not the endpoint's",
    "INVALID_DESTINATION_MAC": "the destination MAC address is not the endpoint's",
    "INVALID_SOURCE_IP": "the source address does not belong to the sending endpoint (spoofed or stale)",
    "INVALID_PACKET_DROPPED": "the packet was malformed",
    "CT_TRUNCATED_OR_INVALID_HEADER": "the packet's headers were truncated or invalid",
    "CT_MISSING_TCP_ACK_FLAG": "a TCP packet without ACK did not match any tracked connection",
    "CT_UNKNOWN_L4_PROTOCOL": "the L4 protocol is not tracked by the connection tracker",
    "CT_MAP_INSERTION_FAILED": "the connection-tracking table is full (raise bpf-ct-global-*-max)",
    "NAT_NO_MAPPING": "no NAT mapping exists for a reply (the connection was forgotten, e.g. after a restart)",
    "NAT_NOT_NEEDED": "NAT was not needed",
    "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT": "no tunnel endpoint is known for the destination's node",
    "UNKNOWN_L3_TARGET_ADDRESS": "the destination address is not known to the datapath",
    "STALE_OR_UNROUTABLE_IP": "the address is stale or unroutable (the pod may have been deleted)",
    "NO_MATCHING_LOCAL_CONTAINER_FOUND": "no local endpoint holds the destination address (pod gone or moving)",
    "UNSUPPORTED_L3_PROTOCOL": "the L3 protocol is not supported",
    "UNSUPPORTED_L2_PROTOCOL": "the L2 protocol is not supported",
    "FIB_LOOKUP_FAILED": "the kernel has no route for the destination",
    "SERVICE_BACKEND_NOT_FOUND": "the Service has no ready backend (check its endpoints and readiness probes)",
    "NO_SERVICE": "no Service answers on that address and port",
    "UNENCRYPTED_TRAFFIC": "traffic had to be encrypted and was not",
    "TTL_EXCEEDED": "the packet's TTL ran out",
    "DENIED_BY_LB_SRC_RANGE_CHECK": "the LoadBalancer's loadBalancerSourceRanges do not include the source",
    "AUTH_REQUIRED": "mutual authentication was required and had not completed",
    "NO_EGRESS_GATEWAY": "no egress gateway is available for this traffic",
    "HOST_NOT_READY": "the host datapath was not ready",
    "IS_A_CLUSTERIP": "the ClusterIP was reached without a matching service port",
    "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND": "a fragment arrived before its first fragment",
    "DROP_HOST_NOT_READY": "the host datapath was not ready",
    "POLICY_DENIED": "a policy denied it",
    "POLICY_DENY": "an explicit deny rule matched it",
}


def describe_drop_reason(reason: str | None) -> str:
    """The meaning of a drop reason, or the reason itself when we do not know it."""
    if not reason:
        return "an unspecified datapath reason"
    meaning = _MEANINGS.get(reason.upper())
    return f"{reason} ({meaning})" if meaning else reason

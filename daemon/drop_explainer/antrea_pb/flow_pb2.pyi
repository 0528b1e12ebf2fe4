import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlowEndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_END_REASON_UNSPECIFIED: _ClassVar[FlowEndReason]
    FLOW_END_REASON_IDLE_TIMEOUT: _ClassVar[FlowEndReason]
    FLOW_END_REASON_ACTIVE_TIMEOUT: _ClassVar[FlowEndReason]
    FLOW_END_REASON_END_OF_FLOW: _ClassVar[FlowEndReason]
    FLOW_END_REASON_FORCED_END: _ClassVar[FlowEndReason]
    FLOW_END_REASON_LACK_OF_RESOURCES: _ClassVar[FlowEndReason]

class IPVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IP_VERSION_UNSPECIFIED: _ClassVar[IPVersion]
    IP_VERSION_4: _ClassVar[IPVersion]
    IP_VERSION_6: _ClassVar[IPVersion]

class FlowType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_TYPE_UNSPECIFIED: _ClassVar[FlowType]
    FLOW_TYPE_INTRA_NODE: _ClassVar[FlowType]
    FLOW_TYPE_INTER_NODE: _ClassVar[FlowType]
    FLOW_TYPE_TO_EXTERNAL: _ClassVar[FlowType]
    FLOW_TYPE_FROM_EXTERNAL: _ClassVar[FlowType]

class NetworkPolicyType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_POLICY_TYPE_UNSPECIFIED: _ClassVar[NetworkPolicyType]
    NETWORK_POLICY_TYPE_K8S: _ClassVar[NetworkPolicyType]
    NETWORK_POLICY_TYPE_ANP: _ClassVar[NetworkPolicyType]
    NETWORK_POLICY_TYPE_ACNP: _ClassVar[NetworkPolicyType]
    NETWORK_POLICY_TYPE_K8SCNP: _ClassVar[NetworkPolicyType]

class NetworkPolicyRuleAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NETWORK_POLICY_RULE_ACTION_NO_ACTION: _ClassVar[NetworkPolicyRuleAction]
    NETWORK_POLICY_RULE_ACTION_ALLOW: _ClassVar[NetworkPolicyRuleAction]
    NETWORK_POLICY_RULE_ACTION_DROP: _ClassVar[NetworkPolicyRuleAction]
    NETWORK_POLICY_RULE_ACTION_REJECT: _ClassVar[NetworkPolicyRuleAction]

class FlowDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_DIRECTION_INGRESS: _ClassVar[FlowDirection]
    FLOW_DIRECTION_EGRESS: _ClassVar[FlowDirection]
    FLOW_DIRECTION_UNKNOWN: _ClassVar[FlowDirection]

class FlowFilterDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_FILTER_DIRECTION_BOTH: _ClassVar[FlowFilterDirection]
    FLOW_FILTER_DIRECTION_FROM: _ClassVar[FlowFilterDirection]
    FLOW_FILTER_DIRECTION_TO: _ClassVar[FlowFilterDirection]
FLOW_END_REASON_UNSPECIFIED: FlowEndReason
FLOW_END_REASON_IDLE_TIMEOUT: FlowEndReason
FLOW_END_REASON_ACTIVE_TIMEOUT: FlowEndReason
FLOW_END_REASON_END_OF_FLOW: FlowEndReason
FLOW_END_REASON_FORCED_END: FlowEndReason
FLOW_END_REASON_LACK_OF_RESOURCES: FlowEndReason
IP_VERSION_UNSPECIFIED: IPVersion
IP_VERSION_4: IPVersion
IP_VERSION_6: IPVersion
FLOW_TYPE_UNSPECIFIED: FlowType
FLOW_TYPE_INTRA_NODE: FlowType
FLOW_TYPE_INTER_NODE: FlowType
FLOW_TYPE_TO_EXTERNAL: FlowType
FLOW_TYPE_FROM_EXTERNAL: FlowType
NETWORK_POLICY_TYPE_UNSPECIFIED: NetworkPolicyType
NETWORK_POLICY_TYPE_K8S: NetworkPolicyType
NETWORK_POLICY_TYPE_ANP: NetworkPolicyType
NETWORK_POLICY_TYPE_ACNP: NetworkPolicyType
NETWORK_POLICY_TYPE_K8SCNP: NetworkPolicyType
NETWORK_POLICY_RULE_ACTION_NO_ACTION: NetworkPolicyRuleAction
NETWORK_POLICY_RULE_ACTION_ALLOW: NetworkPolicyRuleAction
NETWORK_POLICY_RULE_ACTION_DROP: NetworkPolicyRuleAction
NETWORK_POLICY_RULE_ACTION_REJECT: NetworkPolicyRuleAction
FLOW_DIRECTION_INGRESS: FlowDirection
FLOW_DIRECTION_EGRESS: FlowDirection
FLOW_DIRECTION_UNKNOWN: FlowDirection
FLOW_FILTER_DIRECTION_BOTH: FlowFilterDirection
FLOW_FILTER_DIRECTION_FROM: FlowFilterDirection
FLOW_FILTER_DIRECTION_TO: FlowFilterDirection

class IPFIX(_message.Message):
    __slots__ = ("export_time", "sequence_number", "observation_domain_id", "exporter_ip")
    EXPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_DOMAIN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPORTER_IP_FIELD_NUMBER: _ClassVar[int]
    export_time: _timestamp_pb2.Timestamp
    sequence_number: int
    observation_domain_id: int
    exporter_ip: str
    def __init__(self, export_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence_number: _Optional[int] = ..., observation_domain_id: _Optional[int] = ..., exporter_ip: _Optional[str] = ...) -> None: ...

class IP(_message.Message):
    __slots__ = ("version", "source", "destination")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    version: IPVersion
    source: bytes
    destination: bytes
    def __init__(self, version: _Optional[_Union[IPVersion, str]] = ..., source: _Optional[bytes] = ..., destination: _Optional[bytes] = ...) -> None: ...

class TCP(_message.Message):
    __slots__ = ("state_name",)
    STATE_NAME_FIELD_NUMBER: _ClassVar[int]
    state_name: str
    def __init__(self, state_name: _Optional[str] = ...) -> None: ...

class Transport(_message.Message):
    __slots__ = ("protocol_number", "source_port", "destination_port", "TCP")
    PROTOCOL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_PORT_FIELD_NUMBER: _ClassVar[int]
    TCP_FIELD_NUMBER: _ClassVar[int]
    protocol_number: int
    source_port: int
    destination_port: int
    TCP: TCP
    def __init__(self, protocol_number: _Optional[int] = ..., source_port: _Optional[int] = ..., destination_port: _Optional[int] = ..., TCP: _Optional[_Union[TCP, _Mapping]] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("packet_total_count", "packet_delta_count", "octet_total_count", "octet_delta_count")
    PACKET_TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    PACKET_DELTA_COUNT_FIELD_NUMBER: _ClassVar[int]
    OCTET_TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    OCTET_DELTA_COUNT_FIELD_NUMBER: _ClassVar[int]
    packet_total_count: int
    packet_delta_count: int
    octet_total_count: int
    octet_delta_count: int
    def __init__(self, packet_total_count: _Optional[int] = ..., packet_delta_count: _Optional[int] = ..., octet_total_count: _Optional[int] = ..., octet_delta_count: _Optional[int] = ...) -> None: ...

class Labels(_message.Message):
    __slots__ = ("labels",)
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Kubernetes(_message.Message):
    __slots__ = ("flow_type", "source_pod_namespace", "source_pod_name", "source_pod_uid", "source_pod_labels", "source_node_name", "source_node_uid", "destination_pod_namespace", "destination_pod_name", "destination_pod_uid", "destination_pod_labels", "destination_node_name", "destination_node_uid", "destination_cluster_ip", "destination_service_port", "destination_service_port_name", "destination_service_uid", "ingress_network_policy_type", "ingress_network_policy_namespace", "ingress_network_policy_name", "ingress_network_policy_uid", "ingress_network_policy_rule_name", "ingress_network_policy_rule_action", "egress_network_policy_type", "egress_network_policy_namespace", "egress_network_policy_name", "egress_network_policy_uid", "egress_network_policy_rule_name", "egress_network_policy_rule_action", "egress_name", "egress_ip", "egress_node_name", "egress_node_uid", "egress_uid", "destination_service_ip")
    FLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POD_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POD_UID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_POD_LABELS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_NODE_UID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_POD_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_POD_NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_POD_UID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_POD_LABELS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_NODE_UID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_CLUSTER_IP_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_SERVICE_PORT_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_SERVICE_PORT_NAME_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_SERVICE_UID_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NETWORK_POLICY_TYPE_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NETWORK_POLICY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NETWORK_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NETWORK_POLICY_UID_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NETWORK_POLICY_RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    INGRESS_NETWORK_POLICY_RULE_ACTION_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NETWORK_POLICY_TYPE_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NETWORK_POLICY_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NETWORK_POLICY_NAME_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NETWORK_POLICY_UID_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NETWORK_POLICY_RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NETWORK_POLICY_RULE_ACTION_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NAME_FIELD_NUMBER: _ClassVar[int]
    EGRESS_IP_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NODE_NAME_FIELD_NUMBER: _ClassVar[int]
    EGRESS_NODE_UID_FIELD_NUMBER: _ClassVar[int]
    EGRESS_UID_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_SERVICE_IP_FIELD_NUMBER: _ClassVar[int]
    flow_type: FlowType
    source_pod_namespace: str
    source_pod_name: str
    source_pod_uid: str
    source_pod_labels: Labels
    source_node_name: str
    source_node_uid: str
    destination_pod_namespace: str
    destination_pod_name: str
    destination_pod_uid: str
    destination_pod_labels: Labels
    destination_node_name: str
    destination_node_uid: str
    destination_cluster_ip: bytes
    destination_service_port: int
    destination_service_port_name: str
    destination_service_uid: str
    ingress_network_policy_type: NetworkPolicyType
    ingress_network_policy_namespace: str
    ingress_network_policy_name: str
    ingress_network_policy_uid: str
    ingress_network_policy_rule_name: str
    ingress_network_policy_rule_action: NetworkPolicyRuleAction
    egress_network_policy_type: NetworkPolicyType
    egress_network_policy_namespace: str
    egress_network_policy_name: str
    egress_network_policy_uid: str
    egress_network_policy_rule_name: str
    egress_network_policy_rule_action: NetworkPolicyRuleAction
    egress_name: str
    egress_ip: bytes
    egress_node_name: str
    egress_node_uid: str
    egress_uid: str
    destination_service_ip: bytes
    def __init__(self, flow_type: _Optional[_Union[FlowType, str]] = ..., source_pod_namespace: _Optional[str] = ..., source_pod_name: _Optional[str] = ..., source_pod_uid: _Optional[str] = ..., source_pod_labels: _Optional[_Union[Labels, _Mapping]] = ..., source_node_name: _Optional[str] = ..., source_node_uid: _Optional[str] = ..., destination_pod_namespace: _Optional[str] = ..., destination_pod_name: _Optional[str] = ..., destination_pod_uid: _Optional[str] = ..., destination_pod_labels: _Optional[_Union[Labels, _Mapping]] = ..., destination_node_name: _Optional[str] = ..., destination_node_uid: _Optional[str] = ..., destination_cluster_ip: _Optional[bytes] = ..., destination_service_port: _Optional[int] = ..., destination_service_port_name: _Optional[str] = ..., destination_service_uid: _Optional[str] = ..., ingress_network_policy_type: _Optional[_Union[NetworkPolicyType, str]] = ..., ingress_network_policy_namespace: _Optional[str] = ..., ingress_network_policy_name: _Optional[str] = ..., ingress_network_policy_uid: _Optional[str] = ..., ingress_network_policy_rule_name: _Optional[str] = ..., ingress_network_policy_rule_action: _Optional[_Union[NetworkPolicyRuleAction, str]] = ..., egress_network_policy_type: _Optional[_Union[NetworkPolicyType, str]] = ..., egress_network_policy_namespace: _Optional[str] = ..., egress_network_policy_name: _Optional[str] = ..., egress_network_policy_uid: _Optional[str] = ..., egress_network_policy_rule_name: _Optional[str] = ..., egress_network_policy_rule_action: _Optional[_Union[NetworkPolicyRuleAction, str]] = ..., egress_name: _Optional[str] = ..., egress_ip: _Optional[bytes] = ..., egress_node_name: _Optional[str] = ..., egress_node_uid: _Optional[str] = ..., egress_uid: _Optional[str] = ..., destination_service_ip: _Optional[bytes] = ...) -> None: ...

class Aggregation(_message.Message):
    __slots__ = ("end_ts_from_source", "end_ts_from_destination", "stats_from_source", "reverse_stats_from_source", "stats_from_destination", "reverse_stats_from_destination", "throughput_from_source", "reverse_throughput_from_source", "throughput_from_destination", "reverse_throughput_from_destination", "throughput", "reverse_throughput")
    END_TS_FROM_SOURCE_FIELD_NUMBER: _ClassVar[int]
    END_TS_FROM_DESTINATION_FIELD_NUMBER: _ClassVar[int]
    STATS_FROM_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVERSE_STATS_FROM_SOURCE_FIELD_NUMBER: _ClassVar[int]
    STATS_FROM_DESTINATION_FIELD_NUMBER: _ClassVar[int]
    REVERSE_STATS_FROM_DESTINATION_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FROM_SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVERSE_THROUGHPUT_FROM_SOURCE_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FROM_DESTINATION_FIELD_NUMBER: _ClassVar[int]
    REVERSE_THROUGHPUT_FROM_DESTINATION_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    REVERSE_THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    end_ts_from_source: _timestamp_pb2.Timestamp
    end_ts_from_destination: _timestamp_pb2.Timestamp
    stats_from_source: Stats
    reverse_stats_from_source: Stats
    stats_from_destination: Stats
    reverse_stats_from_destination: Stats
    throughput_from_source: int
    reverse_throughput_from_source: int
    throughput_from_destination: int
    reverse_throughput_from_destination: int
    throughput: int
    reverse_throughput: int
    def __init__(self, end_ts_from_source: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_ts_from_destination: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stats_from_source: _Optional[_Union[Stats, _Mapping]] = ..., reverse_stats_from_source: _Optional[_Union[Stats, _Mapping]] = ..., stats_from_destination: _Optional[_Union[Stats, _Mapping]] = ..., reverse_stats_from_destination: _Optional[_Union[Stats, _Mapping]] = ..., throughput_from_source: _Optional[int] = ..., reverse_throughput_from_source: _Optional[int] = ..., throughput_from_destination: _Optional[int] = ..., reverse_throughput_from_destination: _Optional[int] = ..., throughput: _Optional[int] = ..., reverse_throughput: _Optional[int] = ...) -> None: ...

class Flow(_message.Message):
    __slots__ = ("id", "ipfix", "start_ts", "end_ts", "end_reason", "ip", "transport", "k8s", "stats", "reverse_stats", "flow_direction", "aggregation", "proxy_snat_ip", "proxy_snat_port")
    ID_FIELD_NUMBER: _ClassVar[int]
    IPFIX_FIELD_NUMBER: _ClassVar[int]
    START_TS_FIELD_NUMBER: _ClassVar[int]
    END_TS_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    K8S_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REVERSE_STATS_FIELD_NUMBER: _ClassVar[int]
    FLOW_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    PROXY_SNAT_IP_FIELD_NUMBER: _ClassVar[int]
    PROXY_SNAT_PORT_FIELD_NUMBER: _ClassVar[int]
    id: str
    ipfix: IPFIX
    start_ts: _timestamp_pb2.Timestamp
    end_ts: _timestamp_pb2.Timestamp
    end_reason: FlowEndReason
    ip: IP
    transport: Transport
    k8s: Kubernetes
    stats: Stats
    reverse_stats: Stats
    flow_direction: FlowDirection
    aggregation: Aggregation
    proxy_snat_ip: bytes
    proxy_snat_port: int
    def __init__(self, id: _Optional[str] = ..., ipfix: _Optional[_Union[IPFIX, _Mapping]] = ..., start_ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_ts: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_reason: _Optional[_Union[FlowEndReason, str]] = ..., ip: _Optional[_Union[IP, _Mapping]] = ..., transport: _Optional[_Union[Transport, _Mapping]] = ..., k8s: _Optional[_Union[Kubernetes, _Mapping]] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ..., reverse_stats: _Optional[_Union[Stats, _Mapping]] = ..., flow_direction: _Optional[_Union[FlowDirection, str]] = ..., aggregation: _Optional[_Union[Aggregation, _Mapping]] = ..., proxy_snat_ip: _Optional[bytes] = ..., proxy_snat_port: _Optional[int] = ...) -> None: ...

class FlowFilter(_message.Message):
    __slots__ = ("namespaces", "pod_names", "pod_label_selector", "service_names", "flow_types", "ips", "direction")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    POD_NAMES_FIELD_NUMBER: _ClassVar[int]
    POD_LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAMES_FIELD_NUMBER: _ClassVar[int]
    FLOW_TYPES_FIELD_NUMBER: _ClassVar[int]
    IPS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    pod_names: _containers.RepeatedScalarFieldContainer[str]
    pod_label_selector: str
    service_names: _containers.RepeatedScalarFieldContainer[str]
    flow_types: _containers.RepeatedScalarFieldContainer[FlowType]
    ips: _containers.RepeatedScalarFieldContainer[str]
    direction: FlowFilterDirection
    def __init__(self, namespaces: _Optional[_Iterable[str]] = ..., pod_names: _Optional[_Iterable[str]] = ..., pod_label_selector: _Optional[str] = ..., service_names: _Optional[_Iterable[str]] = ..., flow_types: _Optional[_Iterable[_Union[FlowType, str]]] = ..., ips: _Optional[_Iterable[str]] = ..., direction: _Optional[_Union[FlowFilterDirection, str]] = ...) -> None: ...

class GetFlowsRequest(_message.Message):
    __slots__ = ("filters", "since", "max_count", "follow")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[FlowFilter]
    since: _timestamp_pb2.Timestamp
    max_count: int
    follow: bool
    def __init__(self, filters: _Optional[_Iterable[_Union[FlowFilter, _Mapping]]] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_count: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class GetFlowsResponse(_message.Message):
    __slots__ = ("flows", "dropped_count")
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    dropped_count: int
    def __init__(self, flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ..., dropped_count: _Optional[int] = ...) -> None: ...

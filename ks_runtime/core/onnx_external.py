"""Does a serialised ONNX model keep any tensor's data outside itself (ONNX "external data")?

A bundle's hashes cover its graph files; weights stored beside a graph as external data would be read by
onnxruntime from a file no hash names (and, for a model handed over as bytes, from the working folder), so the
bundle reader refuses them (docs/bundle-format.md, "Contract"). The runtime has no `onnx` package, so this walks
the protobuf wire format itself, guided by the few fields of onnx.proto that can hold a TensorProto: graph
initialisers, sparse initialisers, node attributes (Constant values, subgraphs of If/Loop/Scan), functions and
training graphs. Large blobs (raw_data) are skipped by offset, never copied: milliseconds for a 100 MB model.
"""

from __future__ import annotations

# onnx.proto field numbers: message kind -> {field number: the kind of message that field holds}.
_SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},  # ModelProto.graph, training_info, functions
    "training": {1: "graph", 2: "graph"},  # TrainingInfoProto.initialization, algorithm
    "function": {7: "node"},  # FunctionProto.node
    "graph": {1: "node", 5: "tensor", 15: "sparse"},  # GraphProto.node, initializer, sparse_initializer
    "node": {5: "attribute"},  # NodeProto.attribute
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},  # t, g, tensors...
    "sparse": {1: "tensor", 2: "tensor"},  # SparseTensorProto.values, indices
    "tensor": {},
}
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14  # TensorProto.name, external_data, data_location
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_ENTRY_KEY, _ENTRY_VALUE = 1, 2  # StringStringEntryProto
_MAX_DEPTH = 64  # nested subgraphs; deeper is not a model we wrote


def _varint(data: memoryview, pos: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError("truncated or malformed varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(data: memoryview, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited payload) of one message's bytes."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield number, wire, value
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise ValueError(f"field {number} runs past the end of its message")
            yield number, wire, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"field {number} has wire type {wire}, which ONNX never writes")
    if pos != end:
        raise ValueError("a fixed-width field runs past the end of its message")


def _text(data: memoryview, span: tuple[int, int]) -> str:
    return bytes(data[span[0] : span[1]]).decode("utf-8", "replace")[:200]


def _external_location(data: memoryview, start: int, end: int) -> str:
    """The `location` entry of a tensor's external_data, or "" when it names none."""
    for number, wire, value in _fields(data, start, end):
        if number == _TENSOR_EXTERNAL and wire == 2:
            entry = {n: _text(data, v) for n, w, v in _fields(data, *value) if w == 2}
            if entry.get(_ENTRY_KEY) == "location":
                return entry.get(_ENTRY_VALUE, "")
    return ""


def _tensor_is_external(data: memoryview, start: int, end: int) -> str | None:
    """The tensor's name when its data is external, else None."""
    name, external = "", False
    for number, wire, value in _fields(data, start, end):
        if number == _TENSOR_NAME and wire == 2:
            name = _text(data, value)
        elif (number == _TENSOR_LOCATION and wire == 0 and value == _EXTERNAL) or number == _TENSOR_EXTERNAL:
            external = True
    return name if external else None


def external_tensor(model: bytes) -> tuple[str, str] | None:
    """(tensor name, external data location) of the first tensor of `model` (a serialised ModelProto) whose data
    lives outside it, or None when every tensor is inside. ValueError when the bytes are not protobuf."""
    data = memoryview(model)
    stack = [("model", 0, len(data), 0)]
    while stack:
        kind, start, end, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise ValueError(f"subgraphs nested deeper than {_MAX_DEPTH}")
        if kind == "tensor":
            name = _tensor_is_external(data, start, end)
            if name is not None:
                return name, _external_location(data, start, end)
            continue
        schema = _SCHEMA[kind]
        children = [(schema[n], *v, depth + 1) for n, w, v in _fields(data, start, end) if w == 2 and n in schema]
        stack.extend(reversed(children))  # popped in file order: the first external tensor is the one named
    return None

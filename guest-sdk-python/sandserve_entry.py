"""The component's export, generated glue: calls ``app.predict`` (the author's handler) and
converts between the WIT types and the ``sandserve`` SDK types. Not for authors to edit."""

import json
import traceback

import app
import sandserve
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

_TO_WIT = {
    "BOOL": types.ElementType.BOOL, "UINT8": types.ElementType.U8,
    "UINT16": types.ElementType.U16, "UINT32": types.ElementType.U32,
    "UINT64": types.ElementType.U64, "INT8": types.ElementType.I8,
    "INT16": types.ElementType.I16, "INT32": types.ElementType.I32,
    "INT64": types.ElementType.I64, "FP16": types.ElementType.F16,
    "BF16": types.ElementType.BF16, "FP32": types.ElementType.F32,
    "FP64": types.ElementType.F64, "BYTES": types.ElementType.BYTES,
}
_FROM_WIT = {v: k for k, v in _TO_WIT.items()}


def _to_wit(t):
    if not isinstance(t, sandserve.Tensor):
        raise sandserve.HandlerError(f"predict returned a {type(t).__name__} among its outputs, not a sandserve.Tensor")
    t.check_data_length()
    return types.Tensor(t.name, [int(d) for d in t.shape], _TO_WIT[t.datatype], bytes(t.data))


class Handler(exports.Handler):
    def predict(self, request: types.Request) -> types.Response:
        try:
            req = sandserve.Request(
                [sandserve.Tensor(t.name, list(t.shape), _FROM_WIT[t.element_type], t.data)
                 for t in request.inputs],
                request.parameters,
                request.raw_body,
            )
            resp = app.predict(req)
            if not isinstance(resp, sandserve.Response):
                raise sandserve.HandlerError(
                    f"predict returned a {type(resp).__name__}, not a sandserve.Response")
            params = None if resp.parameters is None else json.dumps(resp.parameters)
            return types.Response([_to_wit(t) for t in resp.outputs], params)
        except sandserve.NnError as e:
            if e.is_invalid_input():
                raise Err(types.HandlerError_InvalidInput(e.message.removeprefix("invalid input: ")))
            raise Err(types.HandlerError_Internal(str(e)))
        except sandserve.InvalidInput as e:
            raise Err(types.HandlerError_InvalidInput(str(e)))
        except sandserve.Unavailable as e:
            raise Err(types.HandlerError_Unavailable(str(e)))
        except Exception:  # noqa: BLE001 - the caller sees a generic 500, the log the trace
            raise Err(types.HandlerError_Internal(traceback.format_exc(limit=8)))

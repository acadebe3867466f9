"""Probe UDF for the CLI tests: echoes every point with the init options it saw."""

import json
import os
import sys

import agent_pb2 as T
from udf.agent import Handler, main

BATCH = "--batch-mode" in sys.argv
if BATCH:
    sys.argv.remove("--batch-mode")
MODE = T.BATCH if BATCH else T.STREAM
OPTIONS = {
    "i": [T.INT],
    "d": [T.DOUBLE],
    "b": [T.BOOL],
    "s": [T.STRING],
    "dur": [T.DURATION],
    "pair": [T.INT, T.STRING],
    "flag": [],
}


def describe(value):
    kind = value.WhichOneof("value")
    return [T.ValueType.Name(value.type), getattr(value, kind) if kind else None]


class Probe(Handler):
    def __init__(self, agent=None):
        super().__init__(agent)
        self.opts = []
        self.seen = 0
        self.begin = None
        self.points = []

    def info(self):
        response = T.InfoResponse(wants=MODE, provides=MODE)
        for name, types in OPTIONS.items():
            response.options[name].valueTypes.extend(types)
        return response

    def init(self, req):
        self.opts = [[o.name] + [describe(v) for v in o.values] for o in req.options]
        for o in req.options:
            if o.name == "s" and o.values and o.values[0].stringValue == "reject":
                return T.InitResponse(success=False, error="s must not be 'reject'")
        return T.InitResponse(success=True)

    def snapshot(self):
        return T.SnapshotResponse(snapshot=str(self.seen).encode())

    def restore(self, req):
        self.seen = int(req.snapshot.decode())
        return T.RestoreResponse(success=True)

    def decorate(self, p):
        self.seen += 1
        if "crash" in p.fieldsString:
            sys.stderr.write("E! crashing on purpose\n")
            sys.stderr.flush()
            os._exit(3)
        if "fail" in p.fieldsString:
            raise ValueError("failing on purpose")
        out = T.Point()
        out.CopyFrom(p)
        out.fieldsString["opts"] = json.dumps(self.opts)
        out.fieldsString["env"] = os.environ.get("PROBE_ENV", "")
        out.fieldsString["parent"] = os.environ.get("PROBE_PARENT", "")
        out.fieldsString["group"] = p.group.replace("\n", "/")
        out.fieldsString["dims"] = ",".join(p.dimensions) + ("|byname" if p.byName else "")
        out.fieldsInt["seen"] = self.seen
        return out

    def point(self, p):
        if BATCH:
            self.points.append(p)
            return
        self.agent.write_response(T.Response(point=self.decorate(p)), flush=False)

    def begin_batch(self, begin):
        self.begin = begin
        self.points = []

    def end_batch(self, end):
        responses = [T.Response(begin=self.begin)]
        for p in self.points:
            out = self.decorate(p)
            out.tags.clear()  # the tool must put the batch's tags back
            out.fieldsString["bgroup"] = self.begin.group.replace("\n", "/")
            out.fieldsInt["bsize"] = self.begin.size
            out.fieldsInt["tmax"] = end.tmax
            responses.append(T.Response(point=out))
        responses.append(T.Response(end=end))
        self.agent.write_responses(responses, flush=False)


if __name__ == "__main__":
    sys.exit(main(Probe))

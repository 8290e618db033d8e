"""Hand rtpick's chosen configuration to a serving engine: a Triton model repository, a KServe manifest.

Nothing heavy is imported here; `rtpick.export.triton` (the ModelConfig), `rtpick.export.repository` (the
repository writer) and `rtpick.export.kserve` (the InferenceService) import protobuf, tritonclient and PyYAML
when called.
"""

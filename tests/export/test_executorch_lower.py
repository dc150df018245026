"""export/executorch.py's lower(): each method lowered on its own, with a line when it starts and one with
its time when it is done, gives the same .pte bytes as lowering every method in one call."""

import re

import pytest
import torch

from export import executorch, graphs
from models.config import preset
from models.protocol import KVLayout
from models.vlm import VLM


def one_call_lowering(programs: dict) -> bytes:
    """The methods lowered together by ExecuTorch's to_edge_transform_and_lower, same settings as lower()."""
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    edge = to_edge_transform_and_lower(
        programs, partitioner={name: [executorch._state_safe_partitioner()] for name in programs},
        compile_config=EdgeCompileConfig(_check_ir_validity=False))
    return edge.to_executorch(ExecutorchBackendConfig(
        extract_delegate_segments=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False, share_mutable_buffers=True),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(), run_reinplace_pass=True,
        emit_mutable_buffer_names=True)).buffer


def tiny_programs() -> dict:
    """The stateless methods of the tiny preset (the text decoder takes minutes to lower on a loaded CPU)."""
    torch.manual_seed(0)
    vlm = VLM(preset("fastvlm-tiny"), "dense").eval()
    kv = KVLayout.derive(vlm.cfg, vlm.plan, "shared")
    specs, wrappers = graphs.methods(vlm.cfg, kv), graphs.wrappers(vlm, "shared")
    with torch.no_grad():
        return {name: torch.export.export(wrappers[name], graphs.example_inputs(specs[name]), strict=False)
                for name in ("token_embedding", "vision_encoder")}


@pytest.mark.slow
def test_lowering_prints_a_line_per_method_and_gives_the_one_call_program():
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    lines = []
    buffer = executorch.lower(tiny_programs(), log=lines.append)
    assert lines[0] == "XNNPACK lowering token_embedding (1/2) ..."
    assert re.fullmatch(r"token_embedding lowered in \d+\.\d s \(\d+\.\d s in all\)", lines[1])
    assert lines[2] == "XNNPACK lowering vision_encoder (2/2) ..."
    done = re.fullmatch(r"vision_encoder lowered in (\d+\.\d) s \((\d+\.\d) s in all\)", lines[3])
    assert done and float(done[2]) >= float(done[1])
    assert lines[-1].startswith("to_executorch done in ")
    assert buffer == one_call_lowering(tiny_programs())
    module = _load_for_executorch_from_buffer(buffer)
    assert module.method_meta("vision_encoder").num_inputs() == 1

"""hlo_costs: FLOPs, HBM bytes and collectives of optimized HLO text, loops weighted by trip count."""
import pytest

from wildactor_jax import hlo_costs

# A scan of 30 steps: a matmul fusion that slices its layer's weight out of the stack, an
# all-gather over 4 of 8 devices, a Mosaic kernel whose metadata string breaks over lines, an
# asynchronous prefetch into on-chip memory, a padded convolution (heads as a window) and a buffer
# allocation (no bytes).
HLO = """HloModule jit_step, entry_computation_layout={()->f32[]}

%fused_computation (param_0: bf16[30,256,512], param_1: s32[], param_2: bf16[128,256]) -> bf16[128,512] {
  %param_0 = bf16[30,256,512]{2,1,0} parameter(0)
  %param_1 = s32[] parameter(1)
  %constant.1 = s32[] constant(0)
  %dynamic-slice.1 = bf16[1,256,512]{2,1,0} dynamic-slice(%param_0, %param_1, %constant.1, %constant.1), dynamic_slice_sizes={1,256,512}
  %bitcast.1 = bf16[256,512]{1,0} bitcast(%dynamic-slice.1)
  %param_2 = bf16[128,256]{1,0} parameter(2)
  ROOT %convolution.1 = bf16[128,512]{1,0} convolution(%param_2, %bitcast.1), dim_labels=bf_io->bf
}

%body (p: (s32[], bf16[128,256], bf16[30,256,512])) -> (s32[], bf16[128,256], bf16[30,256,512]) {
  %p = (s32[], bf16[128,256]{1,0}, bf16[30,256,512]{2,1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = bf16[128,256]{1,0} get-tuple-element(%p), index=1
  %w = bf16[30,256,512]{2,1,0} get-tuple-element(%p), index=2
  %fusion.1 = bf16[128,512]{1,0} fusion(%w, %i, %x), kind=kOutput, calls=%fused_computation, metadata={op_name="jit(step)/while/body/dot_general"}
  %all-gather.1 = bf16[512,512]{1,0} all-gather(%fusion.1), channel_id=1, replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}
  %custom-call.1 = bf16[128,256]{1,0} custom-call(%x), custom_call_target="tpu_custom_call", backend_config={"custom_call_config": {"body": "x"}, "xprof_metadata":"{\\"block_q\\": 128,
}"}
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  ROOT %t = (s32[], bf16[128,256]{1,0}, bf16[30,256,512]{2,1,0}) tuple(%next, %custom-call.1, %w)
}

%cond (p.1: (s32[], bf16[128,256], bf16[30,256,512])) -> pred[] {
  %p.1 = (s32[], bf16[128,256]{1,0}, bf16[30,256,512]{2,1,0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%p.1), index=0
  %n = s32[] constant(30)
  ROOT %lt = pred[] compare(%i.1, %n), direction=LT
}

ENTRY %main (a: bf16[128,256], b: bf16[30,256,512], q: bf16[2,64,3072,1], k: bf16[24,128,3072,1]) -> bf16[128,256] {
  %a = bf16[128,256]{1,0} parameter(0)
  %b = bf16[30,256,512]{2,1,0} parameter(1)
  %zero = s32[] constant(0)
  %init = (s32[], bf16[128,256]{1,0}, bf16[30,256,512]{2,1,0}) tuple(%zero, %a, %b)
  %while.1 = (s32[], bf16[128,256]{1,0}, bf16[30,256,512]{2,1,0}) while(%init), condition=%cond, body=%body
  %alloc = bf16[4096,4096]{1,0} custom-call(), custom_call_target="AllocateBuffer"
  %s = bf16[64,64]{1,0} slice(%a), slice={[0:64], [0:64]}
  %cp = (bf16[64,64]{1,0}, bf16[64,64]{1,0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%s), channel_id=2, source_target_pairs={{0,1},{1,0}}
  %cp-done = bf16[64,64]{1,0} collective-permute-done(%cp)
  %copy-start.1 = (bf16[128,256]{1,0:T(8,128)S(1)}, bf16[128,256]{1,0}, u32[]{:S(2)}) copy-start(%a)
  %copy-done.1 = bf16[128,256]{1,0:T(8,128)S(1)} copy-done(%copy-start.1)
  %q = bf16[2,64,3072,1]{3,2,1,0} parameter(2)
  %k = bf16[24,128,3072,1]{3,2,1,0} parameter(3)
  %conv.2 = bf16[2,64,24,128]{3,2,1,0} convolution(%q, %k), window={size=1x24 pad=0_0x23_23 rhs_reversal=0x1}, dim_labels=0bf1_1oi0->0b1f
  ROOT %r = bf16[128,256]{1,0} get-tuple-element(%while.1), index=1
}
"""


def test_analyze_weights_loops_and_separates_kernels():
  h = hlo_costs.analyze(HLO)
  layer_flops = 2 * 128 * 256 * 512
  heads_flops = 2 * (2 * 64) * (24 * 128) * 3072  # the padded window costs nothing extra
  assert h.flops == 30 * layer_flops + heads_flops
  # the fusion reads x and one layer of the stack (not all 30) and writes its result
  fusion = 128 * 256 * 2 + 256 * 512 * 2 + 4 + 128 * 512 * 2  # x, layer, index; result
  gather = 128 * 512 * 2 + 512 * 512 * 2
  prefetch = 128 * 256 * 2  # HBM read only: the destination is on-chip
  add = 3 * 4
  assert h.bytes_by_opcode["fusion"] == 30 * fusion
  assert h.bytes_by_opcode["all-gather"] == 30 * gather
  assert h.bytes_by_opcode["copy-start"] == prefetch
  assert h.kernel_calls == 30 and h.kernel_bytes == 30 * 2 * 128 * 256 * 2
  assert "custom-call" not in h.bytes_by_opcode
  cp, ag = sorted(h.collectives, key=lambda c: c.kind != "collective-permute")
  assert cp.kind == "collective-permute" and cp.group == [0, 1] and cp.wire_bytes == 64 * 64 * 2
  assert h.bytes_by_opcode["slice"] == h.bytes_by_opcode["collective-permute-start"] == 2 * 64 * 64 * 2
  assert ag.kind == "all-gather" and ag.group == [0, 1, 2, 3] and ag.count == 30
  assert ag.wire_bytes == 3 * 128 * 512 * 2  # receives the other 3 shards
  compare = 2 * 4 + 1  # the loop condition runs 31 times
  assert h.bytes == 30 * (fusion + gather + add) + 31 * compare + prefetch + 4 * 64 * 64 * 2 + 2 * 64 * 3072 * 2 + 24 * 128 * 3072 * 2 \
      + 2 * 64 * 24 * 128 * 2


def test_while_without_a_trip_count_is_an_error():
  text = HLO.replace("ROOT %lt = pred[] compare(%i.1, %n), direction=LT",
                     "ROOT %lt = pred[] compare(%i.1, %i.1), direction=LT")
  with pytest.raises(ValueError, match="while loop while.1: no known trip count"):
    hlo_costs.analyze(text)


def test_replica_group_formats():
  parse = lambda attrs: hlo_costs._group(hlo_costs.Instruction("x", "f32[]", "all-gather", [], attrs))
  assert parse(", replica_groups=[2,4]<=[8], dimensions={0}") == [0, 1, 2, 3]
  assert parse(", replica_groups=[4,2]<=[2,4]T(1,0), dimensions={0}") == [0, 4]
  assert parse(", replica_groups={{0,2},{1,3}}, dimensions={0}") == [0, 2]
  assert parse(", replica_groups=mesh['axis_0'=32,'axis_1'=2,'axis_2'=1] {'axis_0'}")[:3] == [0, 2, 4]

#!/usr/bin/env bash
# MaxText baseline: training throughput of MaxText 0.2.5 (PyPI, JAX CPU) on this machine, to compare
# with our trainer. Trains 40 steps on MaxText's synthetic data, one CPU device (JAX's default on CPU;
# XLA's thread pool uses every core), no checkpointing, and prints the median over steps 10..39 of
# MaxText's own per-step seconds, tokens/s and TFLOP/s per device (steps 0..9 include compilation).
#
# Model keys (MaxText base.yml name = value; the defaults that matter are listed too):
#   base_emb_dim=256 base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=4 head_dim=64
#   base_mlp_dim=1024 max_target_length=256 per_device_batch_size=8 vocab_size=256
#   dtype=float32 weight_dtype=float32 (grad_dtype float32 by default) matmul_precision=highest
#   defaults kept: decoder_block=llama2 (pre-RMSNorm, RoPE, SwiGLU mlp_activations=[silu,linear]),
#   logits_via_embedding=false (untied output layer), dropout_rate=0.0, scan_layers=true,
#   remat_policy=full, opt_type=adamw, attention=autoselected (dot_product on CPU).
#   Ours (experiments/base.py) differs in: remat none, tied embeddings, vocab 384, JAX 0.10.2.
# Extra key=value arguments are passed to MaxText, e.g. `remat_policy=minimal_with_context`.
set -euo pipefail
VENV=/tmp/venv_maxtext
PKG=$VENV/lib/python3.12/site-packages

if [ ! -f $VENV/.installed ]; then
  rm -rf $VENV
  PYENV_VERSION=3.12.1 python3 -m venv $VENV
  $VENV/bin/pip install -q maxtext==0.2.5 > /tmp/maxtext_install.log 2>&1 \
    || { tail -20 /tmp/maxtext_install.log; exit 1; }   # maxtext brings no dependencies itself
  # Its decoupled (no Google Cloud) requirements, minus the CUDA/NVIDIA-only lines; jax stays CPU.
  grep -Eiv '^(cuda-|nvidia-|pynvml)' $PKG/dependencies/requirements/generated_requirements/decoupled-requirements.txt \
    > $VENV/maxtext-cpu-requirements.txt
  $VENV/bin/pip install -q -r $VENV/maxtext-cpu-requirements.txt >> /tmp/maxtext_install.log 2>&1 \
    || { tail -20 /tmp/maxtext_install.log; exit 1; }
  touch $VENV/.installed
fi

LOG=/tmp/maxtext_out/cpu_bench.log
rm -rf /tmp/maxtext_out && mkdir -p /tmp/maxtext_out
unset XLA_FLAGS   # no --xla_force_host_platform_device_count: one CPU device
export DECOUPLE_GCLOUD=TRUE JAX_PLATFORMS=cpu
TIMEFORMAT='wall %Rs, CPU %Us user + %Ss sys'
time $VENV/bin/python -m maxtext.trainers.pre_train.train $PKG/maxtext/configs/base.yml \
  run_name=cpu_bench hardware=cpu skip_jax_distributed_system=true dataset_type=synthetic \
  base_emb_dim=256 base_num_decoder_layers=4 base_num_query_heads=4 base_num_kv_heads=4 head_dim=64 \
  base_mlp_dim=1024 max_target_length=256 per_device_batch_size=8 vocab_size=256 \
  dtype=float32 weight_dtype=float32 matmul_precision=highest \
  steps=40 enable_checkpointing=false base_output_directory=/tmp/maxtext_out "$@" > $LOG 2>&1

grep -m1 'device count' $LOG | sed 's/.*\] /MaxText: /'
$VENV/bin/python - $LOG <<'EOF'
import re, statistics, sys
pat = r'completed step: (\d+), seconds: ([\d.]+), TFLOP/s/device: ([\d.]+), Tokens/s/device: ([\d.]+)'
rows = [tuple(map(float, m)) for m in re.findall(pat, open(sys.argv[1]).read()) if int(m[0]) >= 10]
med = lambda i: statistics.median(r[i] for r in rows)
print(f'steps {int(rows[0][0])}..{int(rows[-1][0])} ({len(rows)}), medians: step {1e3 * med(1):.0f} ms, '
      f'{med(3):.0f} tokens/s, {med(2):.3f} TFLOP/s per device (MaxText\'s figure)')
EOF

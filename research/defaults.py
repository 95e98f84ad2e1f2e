"""The config schema and its defaults: every key an experiment may set, with its type and value.

An experiment file starts from `get_config()` (re-exported by experiments/base.py), changes what it
studies and returns the result. The returned ConfigDict is locked: a misspelt key or a value of the wrong type fails at once with the
key's name, and `research.config.validate` checks the combinations before anything compiles.
"""

import ml_collections

# The sub-dicts whose keys are free (the mixture's task names, the mesh rules' logical axes): the
# schema checks their values, not their keys (research/config.check_schema), and a finished run's
# config.json takes them whole (research/runs.py).
FREE_KEYS = ('phases', 'data.mixture', 'data.stages', 'data.replay.mixture', 'data.tasks',
             'data.probes', 'data.skillit.graph', 'mesh.rules', 'objective.denoisers',
             'objective.rates')

# Config keys that moved, old -> new: research/config.check_schema names the new place of an old
# key, and research/runs.py moves them in a finished run's config.json written before the move.
MOVED_KEYS = {
    'data.ordering': 'data.order.name',
    'data.order_by': 'data.order.by',
    'data.pack_order': 'data.order.pack',
    'data.in_context': 'data.order.in_context',
    'data.row_score': 'data.order.row_score',
    'data.folds': 'data.order.folds',
    'data.cyclical': 'data.order.cyclical',
    'data.pacing': 'data.order.pacing',
}


def moved_message(key: str, where: str = 'the experiment file or the --config flag') -> str:
  """The error for a config key of MOVED_KEYS, naming its new place."""
  new = MOVED_KEYS[key]
  return (f"Config key {key!r} moved to {new!r} (it is grouped under {new.rsplit('.', 1)[0]!r} "
          f'now); rename it in {where}.')


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  # Model: a Transformer (research/model/transformer.py), decoder-only or encoder-decoder.
  c.model = ml_collections.ConfigDict()
  c.model.architecture = 'decoder'  # decoder | encoder_decoder
  c.model.num_encoder_layers = 0  # encoder_decoder only; 0 = num_layers
  c.model.vocab_size = 384  # >= the vocabulary's size; a multiple of 128 keeps the output layer fast
  c.model.d_model = 256
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.num_kv_heads = 0  # key/value heads: grouped-query attention, arXiv 2305.13245; 0 = num_heads
  c.model.head_dim = 64
  c.model.mlp_dim = 1024
  c.model.mlp = 'swiglu'  # swiglu (gate, up, down) | gelu | gelu_tanh (up, down: GPT-NeoX's MLP)
  c.model.norm = 'rmsnorm'  # rmsnorm | layernorm (LayerNorm with a bias, GPT-NeoX)
  c.model.attention_bias = False  # biases on the query, key, value and output projections
  c.model.mlp_bias = False  # biases on the MLP's projections
  c.model.parallel_residual = False  # x + attn(norm1(x)) + mlp(norm2(x)), GPT-NeoX's layer
  c.model.rope_base = 10000.0
  c.model.rotary_fraction = 1.0  # share of each head's dims that rotary rotates (NeoX rotary_pct)
  c.model.qk_norm = False  # qk-layernorm (Wortsman et al. 2023, arXiv 2309.14322)
  c.model.tie_embeddings = True  # the output layer is the input embedding; False = its own matrix
  c.model.dtype = 'float32'  # compute dtype: float32 or bfloat16; params stay float32
  # Quantisation-aware training: none | int8 | fp8 (E4M3) fake-quantises both operands of the
  # attention and dense-MLP projections (a scale per row / output column, straight-through
  # gradients; research/model/layers.py fake_quant). Embeddings, logits and MoE experts stay float.
  c.model.quant = 'none'
  # Rematerialisation (activation recomputation in the backward pass): none | full | dots (save
  # every matmul's output) | dots_no_batch (save the projections' and MLP's outputs, recompute the
  # attention scores and the elementwise ops): the fastest on CPU (docs/benchmarks.md) and the
  # activation memory of the attention scores is not kept.
  c.model.remat = 'dots_no_batch'
  # One stacked module scanned over the layers (fast to compile), or a module per layer; both start
  # from the same init (research/model/placed.make_params_init), so flipping it keeps the run.
  c.model.scan_layers = True
  c.model.dropout_rate = 0.0
  c.model.norm_eps = 1e-6
  c.model.init_std = 0.02
  # Mixture of experts (research/model/moe.py): `moe_experts` > 0 makes the MLP of every
  # `moe_every`-th layer (the last of each group) `moe_experts` SwiGLU experts of hidden size
  # `moe_mlp_dim` (0 = mlp_dim), each token routed to its top `moe_top_k`; each expert takes at most
  # ceil(top_k * seq_len * capacity_factor / experts) tokens of a sequence (0 = dropless);
  # normalize_gates renormalises the top-k probabilities to sum to 1 (GShard, Mixtral).
  c.model.moe_experts = 0
  c.model.moe_top_k = 2
  c.model.moe_capacity_factor = 1.25
  c.model.moe_every = 1
  c.model.moe_mlp_dim = 0
  c.model.moe_normalize_gates = False
  # muP, the Maximal Update Parametrization (Yang et al. 2022, arXiv 2203.03466; docs/training.md):
  # mup_base_width d0 > 0 (<= d_model) turns it on with width multiplier m = d_model / d0: hidden
  # matrices init std init_std / sqrt(m) and Adam learning rate / m, output logits / m; at
  # d_model = d0 the model and optimizer are the standard ones. mup_base_head_dim K0 (0 = head_dim)
  # sets the attention scale sqrt(K0) / head_dim (1 / sqrt(head_dim) when head_dim = K0).
  c.model.mup_base_width = 0
  c.model.mup_base_head_dim = 0

  # Data (research/data/): a mixture of seqio tasks, packed into rows with segment ids.
  c.data = ml_collections.ConfigDict()
  c.data.mixture = ml_collections.ConfigDict({'stdlib_prose': 0.5, 'stdlib_code': 0.5})
  # Later stages of the mixture schedule: name -> ConfigDict(at_step=int or at_fraction=float,
  # mixture=ConfigDict(task=weight)); e.g. upsample a domain for the last 20% of training.
  c.data.stages = ml_collections.ConfigDict()
  # Replay (research/data/replay.py): this fraction of every batch (its last rows) re-reads data,
  # by `sampler`: 'constant', the fixed `mixture` at every step; 'power_law', the tasks of the
  # earlier stages of data.stages (needs 2 or more; no `mixture`), each weighted by (steps since a
  # stage last trained it + 1)^-`exponent` (arXiv 2401.10393; 0: equally), all-current data before
  # an earlier stage exists.
  c.data.replay = ml_collections.ConfigDict(
      {'fraction': 0.0, 'mixture': ml_collections.ConfigDict(), 'sampler': 'constant',
       'exponent': 1.0})
  # The data order (research/data/orderings.py): the order in which packing visits each task's
  # documents, and the order in which its packed rows are read.
  c.data.order = ml_collections.ConfigDict()
  # The order each task's packed rows are read in, per epoch: random | easy_to_hard |
  # hard_to_easy | folding (DELT) | cyclical (cyclical curriculum) | pacing (draws from the easiest
  # rows, a pool that grows with the step: competence-based curricula) | rs2 (a fresh random
  # subset of the rows per epoch, RS2 without replacement).
  c.data.order.name = 'random'
  # The per-document score (lower = easier) the non-random orderings and pack='score' use: a
  # metadata field ('difficulty') or SCORES:FIELD, a score launch.score computed ('ref:nll').
  c.data.order.by = 'difficulty'
  # The order packing visits each task's documents in: random | score (ascending `by`, so rows
  # hold documents of similar score) | in_context (related documents share rows: ICLM).
  c.data.order.pack = 'random'
  # in_context (research/data/in_context.py): embedding 'ngrams' (hashed token n-grams: `ngram`,
  # `dims`) or 'checkpoint:PATH' (mean final hidden state); greedy path over the `neighbours`
  # nearest documents, chains of at most `max_chain` documents.
  c.data.order.in_context = ml_collections.ConfigDict(
      {'embedding': 'ngrams', 'ngram': 3, 'dims': 1024, 'neighbours': 10, 'max_chain': 21})
  c.data.order.row_score = 'mean'  # a packed row's score from its documents': mean | max | min
  c.data.order.folds = 3  # folding: L, the ascending passes over interleaved slices per epoch
  # cyclical: epoch data-size fraction cycles start -> end -> start, / or * factor per epoch.
  c.data.order.cyclical = ml_collections.ConfigDict({'start': 0.25, 'end': 1.0, 'factor': 0.5})
  # pacing: the pool at step s is the easiest c(s) of the rows, c(s) = `function` of s: linear |
  # root (`power`) | step (x `increase` every `step_length` steps; 0 = spaced to be full by T),
  # from c(0) = `start` to 1 at T = `steps` (a fraction of train.steps in (0, 1), or a step).
  c.data.order.pacing = ml_collections.ConfigDict(
      {'function': 'root', 'start': 0.1, 'steps': 0.5, 'power': 2.0, 'increase': 2.0,
       'step_length': 0})
  # rs2: each epoch reads `fraction` of the rows, the next of a seeded stream of permutations.
  c.data.order.rs2 = ml_collections.ConfigDict({'fraction': 0.1})
  # Selection / pruning before packing and ordering (research/data/selection.py): keep `fraction`
  # of each task's training documents from the `keep` end (lowest | highest) of score `by` (as
  # data.order.by, or 'random'; '' = keep all), after skipping `offset`; tasks: () = every task.
  # unit: what `fraction` and `offset` are shares of: 'documents' | 'tokens' (equal budgets when
  # the scores favour short or long documents).
  # between: (low, high) ranks and keeps only the documents scored in [low, high] (None: no bound;
  # a time slice by a year, a toxicity ceiling); () = all.
  # by='zipfit' (keep='highest'): gzip alignment to at most `size` documents of task `target`.
  # by='prototypicality': cosine distance to the nearest of `clusters` k-means centroids of the
  # documents' `embedding` ('ngrams' of `ngram` tokens hashed into `dims`, or 'checkpoint:PATH').
  # by='diversity' (keep='lowest'): the same k-means, an equal share kept of every cluster.
  c.data.select = ml_collections.ConfigDict(
      {'by': '', 'keep': 'lowest', 'fraction': 1.0, 'offset': 0.0, 'unit': 'documents',
       'tasks': (), 'between': (),
       'zipfit': ml_collections.ConfigDict({'target': '', 'split': 'train', 'size': 100}),
       'prototypicality': ml_collections.ConfigDict(
           {'clusters': 10, 'iterations': 20, 'embedding': 'ngrams', 'ngram': 3, 'dims': 1024})})
  # Skill-it online mixing (research/data/skillit.py): every `every` steps (0 = off) the mixture of
  # data.mixture's tasks (its weights the prior) is reset by multiplicative weights from the eval
  # `metric` (loss | answer_loss) of `eval_tasks` (() = the mixture's tasks) over the last `window`
  # updates, through the skills `graph` (train task -> {eval task: weight}; empty = identity).
  # rule='sec': the Self-Evolving Curriculum's bandit instead, values updated by TD(0) (step
  # `alpha`) from each skill's eval-loss drop, the mixture their softmax at `temperature` (nats).
  c.data.skillit = ml_collections.ConfigDict(
      {'every': 0, 'metric': 'loss', 'eta': 0.2, 'window': 3, 'eval_tasks': (),
       'graph': ml_collections.ConfigDict(), 'rule': 'skillit', 'alpha': 0.5,
       'temperature': 0.05})
  # More tasks by name: name -> ConfigDict(source='files' | 'tfds' | 'arithmetic' | 'lego' |
  # 'biographies' | 'copying' | 'icl_regression' | 'icl_classification', ...), see
  # research/data/tasks.py. A files task's validation split is the files of its
  # `validation_pattern`, else its `validation_fraction` (0.05) of documents by id hash.
  c.data.tasks = ml_collections.ConfigDict()
  # Modules imported before tasks are resolved, which register seqio Tasks and Mixtures (as t5x's
  # MIXTURE_OR_TASK_MODULE): a registered seqio Task or Mixture is then a task by its name.
  c.data.seqio_modules = ()
  # Knowledge-injection probes (research/data/probes.py): name -> ConfigDict(task, documents,
  # at_step or at_fraction, times=1, every=1): the first `documents` training documents of `task`
  # (a task in no mixture) take the first rows of the batch at steps at, at + every, ... (`times`
  # exposures); their loss and that of the next `documents` (the control) are evaluated.
  c.data.probes = ml_collections.ConfigDict()
  # 'byte', 'spm:PATH' (python -m launch.tokenizer trains one) or 'hf:PATH/tokenizer.json'
  c.data.vocabulary = 'byte'
  c.data.extra_ids = 0  # ids above the vocabulary: control tokens, then sentinels
  # The id every segment's first position reads (BOS): -1 = the vocabulary's BOS where it has one,
  # else 0 (research/data/vocabularies.start_id); config.json records the id a run trained with.
  c.data.start_id = -1
  c.data.seq_len = 256
  c.data.store_dir = ''  # '' = $RESEARCH_DATA_DIR or ~/.cache/research/data
  c.data.mixture_block = 1024  # examples per block in which the mixture proportions are exact
  # Batches each host computes ahead of the step that reads them, each on its own Grain thread.
  c.data.prefetch = 2

  # Objective (research/objectives/): how a packed row of documents becomes an example.
  c.objective = ml_collections.ConfigDict()
  # causal_lm | prefix_lm | span_corruption | ul2 | ul2r | codegen2 | masked_thought | meco
  # | control_tokens | fim | permute | mlm
  c.objective.name = 'causal_lm'
  # Denoising objectives: name -> ConfigDict(mean_span, rate, prefix, mode, weight) replaces the
  # preset's denoisers; `rates` (name -> weight) only reweights them. See denoising.py.
  c.objective.denoisers = ml_collections.ConfigDict()
  c.objective.rates = ml_collections.ConfigDict()
  c.objective.mode_tokens = True  # prepend [NLU] / [NLG] / [S2S] to the inputs (UL2)
  # Decoder denoising: attend bidirectionally within the inputs (UL2's prefix); False = causal
  # attention throughout, as CodeGen2 trains its mixture (arXiv 2305.02309).
  c.objective.prefix_attention = True
  c.objective.target_len = 0  # encoder_decoder: decoder length; 0 = data.seq_len
  # Reverse / permutation training (arXiv 2403.13799, 2403.00758; objectives/permutation.py): a
  # `rate` share of documents with their `unit`s (token | word | sentence) reversed or shuffled
  # (`order`); `alternate`: odd steps read them, even steps the originals (both directions).
  c.objective.permute = ml_collections.ConfigDict(
      {'rate': 1.0, 'unit': 'word', 'order': 'reverse', 'alternate': True})
  # Masked LM (BERT, arXiv 1810.04805; research/objectives/masked_lm.py): select `rate` of the
  # tokens (MosaicBERT: 0.3), of those `mask` -> [MASK], `random` -> a random token, the rest kept.
  c.objective.mlm = ml_collections.ConfigDict({'rate': 0.15, 'mask': 0.8, 'random': 0.1})
  # Masked Thought (Chen et al. 2024, arXiv 2403.02178): mask response inputs after `delimiter`.
  c.objective.masked_thought = ml_collections.ConfigDict(
      {'max_rate': 0.4, 'warmup_fraction': 0.66, 'delimiter': '='})
  # MeCo (Gao et al. 2025, arXiv 2501.01956): `prefix` + source + `suffix` before each document,
  # no loss on it, dropped for the last `cooldown_fraction` of training.
  c.objective.meco = ml_collections.ConfigDict(
      {'cooldown_fraction': 0.1, 'prefix': 'URL: ', 'suffix': '\n\n'})
  # Conditional training (Korbak et al. 2023, arXiv 2302.08582): a control token per line by score.
  c.objective.control = ml_collections.ConfigDict(
      {'scorer': 'pep8', 'threshold': 0.0, 'drop_fraction': 0.1})
  # Fill-in-the-middle (Bavarian et al. 2022, arXiv 2207.14255; research/objectives/fim.py): a
  # `rate` share of documents split at two uniform points (`level` 'char' or 'token') and laid out
  # <PRE> prefix <SUF> suffix <MID> middle, or in SPM order for a `spm_rate` share of those.
  c.objective.fim = ml_collections.ConfigDict({'rate': 0.5, 'spm_rate': 0.5, 'level': 'char'})
  # The loss: cross_entropy | coverage (the pass@N coverage loss of each packed segment, N =
  # `coverage_n`: confidence-limiting, Chen et al. 2025, arXiv 2502.07154; research/objectives/
  # losses.py); `loss` is logged as cross-entropy either way.
  c.objective.loss = 'cross_entropy'
  c.objective.coverage_n = 4
  # Knowledge distillation from the checkpoint in `teacher` (a workdir); '' = off. `weight` of the
  # loss (the rest cross-entropy) until step `until` (0 = throughout; a fraction of train.steps in
  # (0, 1), or a step: SALT's early phase), `shape` constant | linear (decaying to 0 at `until`).
  # hidden_weight: + that times the final hidden states' squared error (self-distillation for
  # further pretraining, arXiv 2210.02871; the teacher's d_model must be the student's).
  # swap: each target's teacher logit exchanged with the teacher's largest (Mix-CPT's logit-swap
  # self-distillation, arXiv 2407.10804: the teacher corrected to rank the target first).
  c.objective.distill = ml_collections.ConfigDict(
      {'teacher': '', 'temperature': 1.0, 'weight': 0.5, 'until': 0.0, 'shape': 'constant',
       'hidden_weight': 0.0, 'swap': False})

  # Optimisation (research/train.py, research/schedules.py).
  c.train = ml_collections.ConfigDict()
  c.train.steps = 1000
  c.train.batch_size = 16  # global batch, in sequences
  c.train.micro_batches = 1  # gradient accumulation: the batch is split into this many
  c.train.grad_clip = 1.0  # global-norm clipping; 0 disables
  c.train.z_loss = 1e-4  # output z-loss coefficient (PaLM; Wortsman et al. 2023); 0 disables
  # Positions per chunk of the output layer and training loss: only [batch, chunk, vocab] logits
  # exist at once (losses.chunked_token_cross_entropy), which saves memory with a large vocabulary
  # (docs/benchmarks.md). 0 = the whole sequence at once. Must divide the (decoder) length.
  c.train.loss_chunk = 0
  # MoE router losses (research/objectives/load_balance.py): the load-balancing loss at scope
  # none | sequence | micro_batch (groups of `moe_balance_rows` rows of a micro-batch; 0 = the rows
  # of one data-parallel shard) | global_batch (Qiu et al. 2025, arXiv 2501.11873), coefficient
  # `moe_lbl`; the router z-loss (ST-MoE), coefficient `moe_z_loss`.
  c.train.moe_balance = 'global_batch'
  c.train.moe_balance_rows = 0
  c.train.moe_lbl = 1e-2
  c.train.moe_z_loss = 1e-3
  # The optimizer (research/optimizers.py): adamw | galore | fira. GaLore (Zhao et al. 2024, arXiv
  # 2403.03507): Adam on gradients projected to `rank` (top singular vectors of the smaller side of
  # each attention and MLP matrix whose sides both exceed it; the rest get Adam), the projection
  # refreshed by an SVD every `update_proj_gap` steps, the update times `scale` (the paper's alpha);
  # `momentum_reset`: the low-rank moments and their bias correction restart at each refresh
  # (Glentis et al. 2025, arXiv 2505.22922). Fira (Chen et al. 2024, arXiv 2410.01623): GaLore
  # with train.galore.* plus the gradient's residual outside the projection, scaled by the ratio
  # of the low-rank Adam update's norm to the projected gradient's, its norm growing at most
  # `fira.limiter` times step to step. All take weight_decay, b1, b2 and eps below, and the
  # schedule.
  c.train.optimizer = 'adamw'
  c.train.galore = ml_collections.ConfigDict({'rank': 128, 'update_proj_gap': 200, 'scale': 0.25,
                                              'momentum_reset': False})
  c.train.fira = ml_collections.ConfigDict({'limiter': 1.01})
  c.train.weight_decay = 0.1
  c.train.b1 = 0.9
  c.train.b2 = 0.95
  c.train.eps = 1e-8
  c.train.log_every = 10
  # Instability monitors (Wortsman et al. 2023, arXiv 2309.14322; research/train.make_train_step):
  # each step's largest attention logit (monitor/attention_logit_max), mean output logit
  # (monitor/output_logit_mean) and largest |output logit| (monitor/output_logit_abs_max), logged
  # as the window's mean like the loss. False computes none of them.
  c.train.monitor_logits = False
  # A step with a non-finite loss or gradient norm (NaN or inf) never applies its update: the
  # parameters and optimizer state stay as they were (research/train.py). Policy 'skip' goes on
  # (metrics: `nonfinite`, the window's fraction of such steps; `nonfinite_steps`, this call's
  # total); 'stop' ends the run with an error once `max_nonfinite` consecutive steps were
  # non-finite, saving no checkpoint there (seen at a log step: every train.log_every steps).
  c.train.nonfinite = 'skip'  # skip | stop
  c.train.max_nonfinite = 1  # 'stop' only: consecutive non-finite steps that stop the run
  # (a, b): a jax.profiler trace of steps a to b-1 in WORKDIR/profile/ (TensorBoard's profile
  # plugin reads it); () = no trace. Process 0 traces; a run resumed inside [a, b) traces the rest.
  # Traced steps run slower: the tokens/s and MFU logged for them read low.
  c.train.profile_steps = ()

  c.schedule = ml_collections.ConfigDict()
  # constant | warmup_cosine | warmup_linear | warmup_inverse_sqrt | wsd | infinite | cycles | rewarm
  c.schedule.name = 'warmup_cosine'
  c.schedule.peak_lr = 3e-3
  c.schedule.warmup_steps = 100
  c.schedule.final_lr_fraction = 0.1  # the decays' floor as a fraction of peak_lr
  # wsd, cycles, rewarm and infinite's cooldown: linear | cosine | 1-sqrt | exponential | inverse_sqrt
  c.schedule.decay_shape = 'cosine'
  c.schedule.decay_fraction = 0.2  # wsd: the decay's share of the run, at its end
  c.schedule.inv_sqrt_alpha = 10.0  # inverse_sqrt shape: alpha in 1/sqrt(1 + alpha u)
  c.schedule.cooldown_fraction = 0.2  # infinite: cooldown after warmup, share of the run
  c.schedule.const_lr_fraction = 0.5  # infinite: the constant LR as a fraction of peak_lr
  c.schedule.anneal_fraction = 0.1  # infinite: final exponential anneal to the floor, share of the run
  c.schedule.cycle_steps = 0  # cycles: steps per warmup + decay cycle; 0 = one cycle over the run
  c.schedule.start_lr = 0.0  # rewarm: the LR at the phase's step 0 (e.g. the last phase's final LR)

  # Phases of one run, each with its own schedule (research/schedules.make_run_schedule), its own
  # objective (research/objectives/registry.objective_phases), its own batch shape
  # (research/data/shapes.py) or several: name -> ConfigDict(at_step=int or at_fraction=float,
  # schedule=ConfigDict(schedule.* keys that change), objective=ConfigDict(objective.* keys that
  # change), seq_len=int, batch_size=int), e.g. re-warm when a data.stages entry switches the
  # mixture (start_lr=-1 starts a phase from the LR the run has reached), or adapt a causal model
  # to prefix LM (objective=dict(name='prefix_lm')). seq_len (<= data.seq_len, which stays the
  # model's and the evaluation's length) packs the phase's rows at that length; batch_size is its
  # rows, by default train.batch_size * data.seq_len / seq_len (the run's tokens per step). A
  # phase that changes only these may start at step 0: sequence-length warm-up (arXiv 2108.06084)
  # is dict(at_step=0, seq_len=64) then dict(at_fraction=0.25, seq_len=data.seq_len).
  c.phases = ml_collections.ConfigDict()

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 200  # steps; evaluation also runs at the end
  c.eval.batches = 4  # batches of the validation split per task
  c.eval.batch_size = 16
  # Extra example formats evaluated on every task, as eval/<task>/<name>/loss: 'causal_lm' or a
  # denoiser name of research/objectives/denoising.DENOISERS (e.g. 'R3_15' for span infilling).
  c.eval.objectives = ()
  # Tasks evaluated besides the training mixture's, e.g. the old domain of a continual run.
  c.eval.tasks = ()
  # Mixture-of-experts models: at every evaluation, the expert pathways of the first
  # `pathway_rows` packed training rows of every task give monitor/<task>/pathway_distance and
  # pathway_consistency, generalisation signals without a test set (research/pathways.py); 0 = off.
  c.eval.pathway_rows = 0
  # In-loop few-shot multiple choice (research/multiple_choice.py, as OLMo's in-loop downstream
  # evaluations): on each of `tasks` (tasks whose documents are a prompt and its answer:
  # arithmetic, lego, biographies), `examples` validation questions, each after `shots` other
  # validation documents, answered by the likeliest of `choices` candidates (the answer and other
  # questions' answers) -> eval/<task>/mc_accuracy and mc_accuracy_norm; () = off.
  c.eval.multiple_choice = ml_collections.ConfigDict(
      {'tasks': (), 'examples': 64, 'shots': 2, 'choices': 4})

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 200
  c.checkpoint.keep = 3
  c.checkpoint.async_save = True

  # Continual pretraining: a new run that starts from a checkpoint (research/checkpoint.py).
  c.init = ml_collections.ConfigDict()
  c.init.path = ''  # a workdir (its latest checkpoint), WORKDIR/checkpoints/<step>, or a
  #                   launch.convert output; '' = from scratch
  c.init.optimizer = False  # carry the optimizer state (Adam moments) too; else a fresh one
  c.init.step = 'reset'  # reset: count from step 0 | keep: go on from the checkpoint's step
  #                        (train.steps is then the last step, not the number of new steps)
  c.init.schedule = 'restart'  # restart: the schedule starts over | continue: it goes on from
  #                              the checkpoint's step
  c.init.grow = False  # a smaller decoder's checkpoint is grown to model.* (more num_layers,
  #                      num_heads, mlp_dim), computing the same function (bert2BERT;
  #                      research/model/growth.py); with a fresh optimizer state
  c.init.grow_noise = 0.0  # Net2Net's symmetry breaking: Gaussian noise of this times each
  #                          incoming parameter's std on the copied units (0 = exact function)

  # Device mesh (research/sharding.py). -1 takes all remaining devices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.expert = 1  # expert parallelism (MoE): experts split over it, the batch too
  # Multislice TPU jobs: how many slices each axis spans (over the slow data-centre network);
  # their product is the number of slices. An axis's size above is over all of them.
  c.mesh.dcn_data = 1
  c.mesh.dcn_fsdp = 1
  c.mesh.dcn_tensor = 1
  c.mesh.dcn_expert = 1
  # Logical axis -> mesh axes. A logical axis missing here is replicated. `expert` and
  # `expert_batch` are the expert and row axes of the tokens dispatched to MoE experts.
  c.mesh.rules = ml_collections.ConfigDict({
      'batch': ('data', 'fsdp', 'expert'),
      'expert': 'expert',
      'expert_batch': ('data', 'fsdp'),
      'embed': 'fsdp',
      'mlp': 'tensor',
      'heads': 'tensor',
      'vocab': 'tensor',
      'kv': None,
      'length': None,
      'layers': None,
  })

  # Multi-host: jax.distributed.initialize() runs when this is true, or when the environment
  # names a coordinator (JAX_COORDINATOR_ADDRESS, TPU pods, SLURM).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = False
  c.distributed.coordinator_address = ''
  c.distributed.num_processes = -1
  c.distributed.process_id = -1

  # Where metrics go besides WORKDIR/metrics.jsonl and TensorBoard (research/metrics.py).
  c.logging = ml_collections.ConfigDict()
  # Weights & Biases (research/wandb_log.py; pip install wandb): `project` '' = off. The run's
  # metrics at the steps of metrics.jsonl, and its config; a resumed run continues the same W&B run
  # (its id is kept in WORKDIR/wandb_id). `name` '' = the workdir's base name; `mode` '' = W&B's
  # default ($WANDB_MODE, else online) | online | offline (`wandb sync` uploads it) | disabled.
  c.logging.wandb = ml_collections.ConfigDict(
      {'project': '', 'entity': '', 'name': '', 'tags': (), 'mode': ''})

  c.lock()
  return c

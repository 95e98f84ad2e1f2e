"""Builds the document stores an experiment reads, with Apache Beam, before training.

  python -m launch.build_data --config=experiments/NAME.py [--config.KEY=V ...] \
      [--runner=DirectRunner|DataflowRunner|FlinkRunner] [--num_workers=N] [-- BEAM_OPTIONS...]

Every task the experiment names (data.mixture, data.stages, data.replay, data.probes, eval.tasks,
data.skillit.eval_tasks) gets its train and validation stores, tokenized with data.vocabulary,
as sharded ArrayRecord files and a manifest under data.store_dir (a local path or gs://...;
research/data/records.py), and the train split of every task the objective reads rows of is
packed into a rows store beside it (research/data/rows.py: rows of the objective's length, one
record per row, what training reads). The DirectRunner runs --num_workers processes on this
machine (default: one per core); for a corpus in a bucket, run it on Dataflow and put the stores
in the bucket:

  python -m launch.build_data --config=experiments/NAME.py --config.data.store_dir=gs://B/stores \
      --runner=DataflowRunner -- --project=P --region=R --temp_location=gs://B/tmp \
      --setup_file=./setup.py

Re-running the command keeps every shard that is complete and matches its checksum and builds the
rest (a build that was stopped finishes; a damaged shard is rebuilt). It prints each store's
directory, documents and tokens, and each rows store's rows.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

from absl import flags

from research import errors
from research.data import build, pipeline, records, rows, tasks

_RUNNER = flags.DEFINE_string('runner', 'DirectRunner', 'The Beam runner: DirectRunner (this '
                              'machine), DataflowRunner, FlinkRunner, ...')
_NUM_WORKERS = flags.DEFINE_integer('num_workers', 0, 'DirectRunner processes (0: one per core; 1: '
                                    'in this process).')
flags.mark_flags_as_required(['config'])


@cli.exits_on_user_error
def main(argv):
  cli.quiet_absl_logging()
  config = cli.CONFIG.value
  if _NUM_WORKERS.value < 0:
    raise errors.UserError(f'--num_workers={_NUM_WORKERS.value} must be 0 (one per core) or more.')
  requests = [(task, split) for task in pipeline.run_tasks(config) for split in tasks.SPLITS]
  options = build.pipeline_options(_RUNNER.value, argv[1:], _NUM_WORKERS.value)
  manifests = build.build(requests, config.data.vocabulary, config.data.store_dir, options)
  for (task, split), manifest in manifests.items():
    directory = records.store_path(task, split, config.data.vocabulary, config.data.store_dir)
    print(f"{task} {split}: {manifest['num_documents']} documents, {manifest['num_tokens']} "
          f"tokens, {len(manifest['shards'])} shards in {directory}")
  for task, recipe in pipeline.row_stores(config):
    manifest = rows.build_rows(task, config.data.vocabulary, config.data.store_dir, recipe, options)
    documents = records.store_path(task, 'train', config.data.vocabulary, config.data.store_dir)
    print(f"{task} train: {manifest['num_rows']} rows of {recipe.row_len} tokens, "
          f"{len(manifest['shards'])} shards in {rows.rows_path(documents, recipe)}")


if __name__ == '__main__':
  cli.run(main)

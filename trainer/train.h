// trainer/train.h: the `train` subcommand.
#ifndef ANVIL_TRAINER_TRAIN_H
#define ANVIL_TRAINER_TRAIN_H

#ifdef __cplusplus
extern "C" {
#endif

// `anvil train [CONFIG] [section.key=value ...]` with argv after "train" (MPI is
// initialized by the caller). Returns the process exit code: 0 done, 1 internal error,
// 2 bad input, 75 stopped by a signal.
int train_main(int argc, char **argv);
// `anvil plan [CONFIG] [section.key=value ...]`: what `train` with the same arguments
// (and ranks) would allocate on each rank, printed, without loading data or allocating:
// 0 when it fits the device, 2 when it does not or the config is bad.
int plan_main(int argc, char **argv);

// `anvil ckpt info PATH` / `anvil ckpt verify DIR` (ckpt_cli.c): 0, or 2 for a bad or
// missing checkpoint (printed).
int ckpt_main(int argc, char **argv);
// `anvil sample CKPT [--prompt TEXT] [--max-tokens N] [--temperature T] [--top-k K]
// [--top-p P] [--seed S] [--tokenizer FILE]` (ckpt_cli.c; MPI initialized, one rank).
int sample_main(int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif

# A toy run for tests and smoke checks: seconds on a CPU. Give it a data_dir:
#   python train.py config/tiny.py --data_dir=data/tiny --out_dir=out-tiny
n_layer = 2
n_head = 2
n_embd = 32
block_size = 16
batch_size = 4
max_iters = 20
eval_interval = 10
eval_iters = 2
log_interval = 1
warmup_iters = 2
learning_rate = 3e-3
min_lr = 3e-4
device = "cpu"
dtype = "float32"  # on every CPU, AMX or not (dtype=auto), so that tests compare the same numbers
peak_flops = 1e11  # skip measuring the matmul peak at start-up: a toy model's MFU means nothing
sample_tokens = 0  # test data comes with a placeholder tokenizer; tests that want samples turn them on

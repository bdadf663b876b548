# A GPT-2-small-class model (12 layers, 768 wide, 1024 context) on the full fawiki dump,
# for one GPU or a node of them:
#   python prepare.py --out_dir=data/fawiki_full --vocab_size=32768     # the whole dump
#   python train.py config/fawiki_gpu.py                                 # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/fawiki_gpu.py   # a node
# 8 x 8 x 1024 = 65,536 tokens per micro-batch round, x 8 accumulation = ~0.5 M tokens per step
# whatever the number of GPUs (gradient_accumulation_steps is divided among the processes).
data_dir = "data/fawiki_full"
out_dir = "out-fawiki-gpu"
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
batch_size = 8
gradient_accumulation_steps = 64
max_iters = 2000  # ~1 B tokens: about five passes over the ~0.8 GB (~0.2 B tokens) of clean fawiki
lr_decay_iters = 2000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 500
eval_interval = 500
eval_iters = 100
log_interval = 10
device = "auto"
dtype = "auto"  # bf16 autocast on GPUs that have it
compile = True

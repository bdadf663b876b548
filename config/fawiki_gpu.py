# A GPT-2-small-class model (12 layers, 768 wide, 1024 context) on the full fawiki dump,
# for one GPU or a node of them:
#   python prepare.py --out_dir=data/fawiki_full --vocab_size=32768     # the whole dump
#   python train.py config/fawiki_gpu.py                                 # one GPU
#   torchrun --standalone --nproc_per_node=8 train.py config/fawiki_gpu.py   # a node
#
# Memory per GPU, bf16 autocast with torch.compile (110 M parameters at vocab 32,768):
#   weights, gradients and AdamW's two moments, fp32: 16 bytes x 110 M        = ~1.8 GB
#   activations kept for the backward pass, bf16: ~34 x 768 bytes per token per layer
#     (flash attention keeps no T x T scores) x 12 layers                    = ~0.31 MB per token
#   the output head at the loss: bf16 logits, their fp32 copy for the cross-entropy and its
#     gradient, ~10 bytes x 32,768 per token                                 = ~0.33 MB per token
#   32 x 1024 = 32,768 tokens per micro-batch x ~0.64 MB                      = ~21 GB
# so ~25 GB with the allocator's slack: an 80 GB GPU (A100, H100) has room to double batch_size
# and a 40 GB A100 still fits this one. A larger micro-batch means fewer, bigger kernels.
# 32 x 1024 tokens x 16 micro-batches = 524,288 (~0.5 M) tokens per optimizer step, whatever
# the number of GPUs: gradient_accumulation_steps counts micro-batches over all processes
# (16 on 1 GPU, 2 each on 8). Halving batch_size? Double gradient_accumulation_steps.
data_dir = "data/fawiki_full"
out_dir = "out-fawiki-gpu"
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
dropout = 0.0
batch_size = 32
gradient_accumulation_steps = 16
max_iters = 2000  # ~1 B tokens: about nine passes over the ~0.8 GB (~0.11 B tokens at ~7.3 bytes each) of fawiki
lr_decay_iters = 2000
learning_rate = 6e-4
min_lr = 6e-5
warmup_iters = 500
eval_interval = 500
eval_iters = 25  # x 32 sequences: ~0.8 M tokens per split, on rank 0 while the others wait
log_interval = 10
device = "auto"
dtype = "auto"  # bf16 autocast on GPUs that compute it natively (Ampere on), else fp16 with loss scaling
compile = True

# Fine-tune the pre-trained Persian model (config/pretrain_persian.py) on fawiki, with data encoded
# by the same tokenizer (the prepare commands are in that file):
#   python train.py config/finetune_fawiki.py
# The model's shape comes from the checkpoint; the LR schedule starts afresh and is shorter.
init_from = "out-pretrain-persian/ckpt.pt"
data_dir = "data/fawiki_ft"
out_dir = "out-finetune-fawiki"
block_size = 128
dropout = 0.1  # half a million tokens, read several times: regularise
batch_size = 16
gradient_accumulation_steps = 2
max_iters = 300  # ~1.2 M tokens, about two passes over the fawiki training text
learning_rate = 2e-3  # the pre-training peak: measured better on fawiki than a third of it (REPORT.md)
min_lr = 2e-4
warmup_iters = 50
eval_interval = 25
eval_iters = 20
log_interval = 10
device = "cpu"

# A small Persian GPT that a 2-core laptop CPU trains in ten minutes.
#   python prepare.py ../shared/data/fawiki/fawiki-sample-pages-articles.xml.bz2 \
#       ../shared/data/fawiki/fawiki-bio-paragraphs.jsonl --out_dir=data/fawiki
#   python train.py config/fawiki_small.py
# The shape and settings won the ten-minute hyperparameter study (REPORT.md, section 8): at this
# budget a small model that takes many steps beats larger ones, on fawiki and on other Persian text.
data_dir = "data/fawiki"
out_dir = "out-fawiki-small"
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
mlp = "relu2"  # squared ReLU: lower loss than GELU at ten minutes (docs/benchmarks.md, the hyperparameter study)
dropout = 0.1  # for several passes over a small corpus; at two passes none did better (REPORT.md, section 7)
batch_size = 16
gradient_accumulation_steps = 2
max_minutes = 10.0  # the LR decays over this budget
max_iters = 100000  # the time budget ends the run first
learning_rate = 2e-3  # small models take a larger LR
min_lr = 2e-4
warmup_iters = 50
eval_interval = 100
eval_iters = 20
log_interval = 10
device = "cpu"

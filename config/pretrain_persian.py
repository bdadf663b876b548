# Causal-LM pre-training on general Persian text (news and classical poetry), the first half of
# pre-train -> fine-tune (REPORT.md). One tokenizer serves both halves; it is trained on the
# pre-training text and the fawiki training text together, and the other two directories are
# encoded with it:
#   S=../shared/data
#   python prepare.py $S/persian/news.jsonl $S/persian/poems.jsonl \
#       $S/fawiki/fawiki-sample-pages-articles.xml.bz2 $S/fawiki/fawiki-bio-paragraphs.jsonl \
#       --out_dir=data/persian_fawiki --val_fraction=0.05 --test_fraction=0.05
#   python prepare.py $S/persian/news.jsonl $S/persian/poems.jsonl --out_dir=data/persian \
#       --tokenizer=data/persian_fawiki/tokenizer.json --val_fraction=0.05 --test_fraction=0.05
#   python prepare.py $S/fawiki/fawiki-sample-pages-articles.xml.bz2 $S/fawiki/fawiki-bio-paragraphs.jsonl \
#       --out_dir=data/fawiki_ft --tokenizer=data/persian_fawiki/tokenizer.json --val_fraction=0.05 --test_fraction=0.05
#   python train.py config/pretrain_persian.py
# config/finetune_fawiki.py starts from this model (4 layers x 256, fawiki_small's shape before the study).
data_dir = "data/persian"
out_dir = "out-pretrain-persian"
n_layer = 4
n_head = 4
n_embd = 256
block_size = 128
dropout = 0.0  # 10 M tokens, read less than once: nothing to overfit yet
batch_size = 16
gradient_accumulation_steps = 2
max_iters = 600  # 600 x 4,096 tokens per step: ~2.5 M tokens
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
eval_interval = 100
eval_iters = 20
log_interval = 10
device = "cpu"

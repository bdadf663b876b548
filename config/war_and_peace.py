# Tolstoy's War and Peace (English; Project Gutenberg #2600): a model that writes in the book's
# style. prepare.py drops the Gutenberg header and footer, cuts the book at blank lines into
# documents of ~5,000 characters and holds 5% out for validation and 5% for test; Persian
# normalization is switched off.
#   python prepare.py ../shared/data/books/pg2600.txt --out_dir=data/war_and_peace \
#       --normalize_text=False --vocab_size=4096 --val_fraction=0.05 --test_fraction=0.05 --book_chunk_chars=5000
#   python train.py config/war_and_peace.py
#   python sample.py --out_dir=out-war-and-peace --start="Prince Andrew"
data_dir = "data/war_and_peace"
out_dir = "out-war-and-peace"
n_layer = 4
n_head = 4
n_embd = 256
block_size = 256  # English BPE tokens are short (~4 bytes): a longer window holds a few sentences
dropout = 0.1  # one book, read several times in ten minutes: regularise
batch_size = 8
gradient_accumulation_steps = 2
max_minutes = 10.0  # the LR decays over this budget
max_iters = 100000  # the time budget ends the run first
learning_rate = 2e-3
min_lr = 2e-4
warmup_iters = 50
eval_interval = 100
eval_iters = 20
log_interval = 10
device = "cpu"

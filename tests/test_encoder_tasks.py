"""The lecture's two encoder output kinds learn their tasks with the Hugging Face Trainer."""

import numpy as np
import torch
from conftest import tiny_config
from transformers import DataCollatorForTokenClassification, DataCollatorWithPadding, Trainer, TrainingArguments

from copynat import CopyNatForSequenceClassification, CopyNatForTokenClassification, train_tokenizer
from copynat.data.tasks import TAGS, make_sentiment_dataset, make_tagging_dataset, tokenize_and_align_labels


def trainer_args(tmp_path, steps):
    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=32, max_steps=steps,
                             learning_rate=3e-3, warmup_steps=10, save_strategy="no", report_to=[], use_cpu=True,
                             logging_steps=50, seed=0, dataloader_num_workers=0)


def test_token_classification_learns_i_saw_a_saw(tmp_path):
    train, test = make_tagging_dataset(1500, seed=0), make_tagging_dataset(200, seed=1)
    tokenizer = train_tokenizer((" ".join(words) for words in train["words"]), vocab_size=300)
    encode = lambda rows: tokenize_and_align_labels(tokenizer, rows["words"], rows["tags"])  # noqa: E731
    train_set = train.map(encode, batched=True, remove_columns=["words", "tags"])
    test_set = test.map(encode, batched=True, remove_columns=["words", "tags"])
    torch.manual_seed(0)
    model = CopyNatForTokenClassification(tiny_config(vocab_size=len(tokenizer), num_labels=len(TAGS)))
    trainer = Trainer(model=model, args=trainer_args(tmp_path, 150), train_dataset=train_set,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    trainer.train()
    prediction = trainer.predict(test_set)
    labels, predicted = prediction.label_ids, prediction.predictions.argmax(-1)
    accuracy = (predicted == labels)[labels != -100].mean()
    assert accuracy > 0.97, accuracy
    # "I saw a saw": the same word gets VERB then NOUN
    encoded = tokenize_and_align_labels(tokenizer, [["I", "saw", "a", "saw", "."]], [[0] * 5])
    logits = model.eval()(input_ids=torch.tensor(encoded["input_ids"])).logits[0]
    first_pieces = [i for i, label in enumerate(encoded["labels"][0]) if label != -100]
    tags = [TAGS[int(logits[i].argmax())] for i in first_pieces]
    assert tags[1] == "VERB" and tags[3] == "NOUN", tags


def test_sequence_classification_learns_sentiment_with_negation(tmp_path):
    train, test = make_sentiment_dataset(1500, seed=0), make_sentiment_dataset(200, seed=1)
    tokenizer = train_tokenizer(train["text"], vocab_size=300)
    encode = lambda rows: tokenizer(rows["text"], truncation=True)  # noqa: E731
    train_set, test_set = (d.map(encode, batched=True, remove_columns=["text"]) for d in (train, test))
    torch.manual_seed(0)
    model = CopyNatForSequenceClassification(tiny_config(vocab_size=len(tokenizer), num_labels=2))
    # negation makes the first ~100 steps a plateau at chance (loss 0.69) before attention combines "not" + word
    trainer = Trainer(model=model, args=trainer_args(tmp_path, 300), train_dataset=train_set,
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    prediction = trainer.predict(test_set)
    accuracy = np.mean(prediction.predictions.argmax(-1) == prediction.label_ids)
    assert accuracy > 0.95, accuracy

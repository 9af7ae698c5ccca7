"""The Hugging Face Trainer drives copynat unchanged: Seq2SeqTrainer + DataCollatorForSeq2Seq, AT and NAT."""

import torch
from conftest import tiny_config
from datasets import Dataset
from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments

from copynat import CopyNatForConditionalGeneration, train_tokenizer
from copynat.data import make_echo_examples


def test_seq2seq_trainer_finetunes_and_predicts_with_generate(tmp_path):
    examples = make_echo_examples(256, split="train", seed=0)
    tokenizer = train_tokenizer([e["source"] for e in examples] + [e["target"] for e in examples], vocab_size=400)
    dataset = Dataset.from_list(examples).map(
        lambda rows: tokenizer(rows["source"], text_target=rows["target"], truncation=True), batched=True,
        remove_columns=["source", "target", "entities"],
    )
    torch.manual_seed(0)
    model = CopyNatForConditionalGeneration(tiny_config(vocab_size=len(tokenizer), decoder_mode="hybrid"))
    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, gradient_accumulation_steps=2, max_steps=30,
        learning_rate=1e-2, warmup_steps=3, logging_steps=5, save_strategy="no", report_to=[], use_cpu=True,
        predict_with_generate=True, generation_max_length=24, per_device_eval_batch_size=16, seed=0,
        dataloader_num_workers=0,
    )
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset.select(range(16)),
                             data_collator=DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 6 and losses[-1] < 0.85 * losses[0], losses

    for extra in ({}, {"non_autoregressive": True, "nat_iterations": 2}):
        prediction = trainer.predict(dataset.select(range(16)), **extra)
        assert prediction.predictions.shape[0] == 16
        ids = torch.tensor(prediction.predictions).masked_fill(torch.tensor(prediction.predictions) < 0, 0)
        assert ids[:, 0].eq(model.config.decoder_start_token_id).all()
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        assert all(isinstance(text, str) for text in texts) and any(text.strip() for text in texts)

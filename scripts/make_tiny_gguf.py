#!/usr/bin/env python3
"""Write a tiny random-weight llama-architecture GGUF model.

The model is useless for language but real for the engine: llama-server loads
it, tokenizes with it and decodes tokens from it. Weights come from a fixed
seed, so the file is byte-identical on every run and its checksum can be
pinned by tests.

Usage: make_tiny_gguf.py OUTPUT_PATH
"""

import sys

import numpy as np
import gguf

N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX = 128
SEED = 20261126

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def vocabulary():
    """Tokens, scores and types for a SentencePiece-style llama vocabulary."""
    tokens, scores, types = [], [], []

    def add(text, score, kind):
        tokens.append(text.encode("utf-8"))
        scores.append(score)
        types.append(kind)

    add("<unk>", 0.0, gguf.TokenType.UNKNOWN)
    add("<s>", 0.0, gguf.TokenType.CONTROL)
    add("</s>", 0.0, gguf.TokenType.CONTROL)
    for byte in range(256):
        add(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE)
    add("\u2581", -1.0, gguf.TokenType.NORMAL)
    printable = [chr(c) for c in range(33, 127)]
    for index, char in enumerate(printable):
        add(char, -2.0 - index * 0.01, gguf.TokenType.NORMAL)
    words = ["hello", "world", "the", "engine", "llama", "server", "token", "test"]
    for index, word in enumerate(words):
        add("\u2581" + word, -0.5 - index * 0.01, gguf.TokenType.NORMAL)
    return tokens, scores, types


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_tiny_gguf.py OUTPUT_PATH")
    output = sys.argv[1]
    rng = np.random.default_rng(SEED)
    tokens, scores, types = vocabulary()
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(output, "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(name, *shape):
        data = rng.standard_normal(shape, dtype=np.float32) * 0.02
        writer.add_tensor(name, data)

    def norm(name):
        writer.add_tensor(name, np.ones(N_EMBD, dtype=np.float32))

    weight("token_embd.weight", n_vocab, N_EMBD)
    for layer in range(N_LAYER):
        prefix = f"blk.{layer}"
        norm(f"{prefix}.attn_norm.weight")
        weight(f"{prefix}.attn_q.weight", N_EMBD, N_EMBD)
        weight(f"{prefix}.attn_k.weight", N_EMBD // N_HEAD * N_HEAD_KV, N_EMBD)
        weight(f"{prefix}.attn_v.weight", N_EMBD // N_HEAD * N_HEAD_KV, N_EMBD)
        weight(f"{prefix}.attn_output.weight", N_EMBD, N_EMBD)
        norm(f"{prefix}.ffn_norm.weight")
        weight(f"{prefix}.ffn_gate.weight", N_FF, N_EMBD)
        weight(f"{prefix}.ffn_up.weight", N_FF, N_EMBD)
        weight(f"{prefix}.ffn_down.weight", N_EMBD, N_FF)
    norm("output_norm.weight")
    weight("output.weight", n_vocab, N_EMBD)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    main()

"""Synthetic Taboo games played by LLMs through an OpenAI-compatible API.

A describer model gives `CLUE:` lines for a target word without using it or its taboo words; guesser
models answer `GUESS: <word>`. The rules are enforced strictly (`rules`), bad turns are repaired
(`game`), calls are retried with backoff (`client`), and every finished game is appended to disk at
once so a crash or a kill loses nothing (`runner`, `store`). `command` is the `synth` subcommand.
"""

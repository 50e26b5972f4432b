"""One module per `rpger-ops` subcommand, each with `main(argv: list[str]) -> int`."""

"""The `qrfleet` command: thin parsers over the server (`host`) and the field tools (`tools`).

One module per command group, each adding its subcommands to the parser built in
`qrfleet.cli`; option blocks several commands share are declared once in
`qrfleet.options`.
"""

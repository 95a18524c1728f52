"""One module per figure: each reads a result table and writes PNG + PDF + the CSV of what it plots."""

from llmtriage.cli import main

main()

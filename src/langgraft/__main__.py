from langgraft.cli import main

raise SystemExit(main())

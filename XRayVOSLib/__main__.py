from XRayVOSLib.cli import main

raise SystemExit(main())

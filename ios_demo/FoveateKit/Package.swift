// swift-tools-version:6.0
// FoveateKit: the iOS port of foveate's runtime. FoveateCore (Foundation only) mirrors runtime/ class for
// class and is tested on any platform with `swift test`; FoveateCoreML is the Core ML engine (Apple only).
import PackageDescription

let package = Package(
    name: "FoveateKit",
    platforms: [.iOS(.v18), .macOS(.v15)],
    products: [
        .library(name: "FoveateCore", targets: ["FoveateCore"]),
        .library(name: "FoveateCoreML", targets: ["FoveateCoreML"]),
    ],
    targets: [
        .target(name: "FoveateCore"),
        .target(name: "FoveateCoreML", dependencies: ["FoveateCore"]),
        .testTarget(name: "FoveateCoreTests", dependencies: ["FoveateCore"], resources: [.copy("Fixtures")]),
    ]
)

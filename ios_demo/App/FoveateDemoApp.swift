// foveate's iOS demo: ask a question about a photo, answered on the device by a foveate Core ML build.
import SwiftUI

@main
struct FoveateDemoApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}

// The demo screen: a photo, a question, the streamed answer and its figures; the self-check in a sheet.
import FoveateCore
import PhotosUI
import SwiftUI

struct ContentView: View {
    @State private var model = DemoModel()
    @State private var photo: PhotosPickerItem?
    @State private var showCheck = false

    var body: some View {
        NavigationStack {
            Form {
                Section("Picture") {
                    if let preview = model.preview {
                        Image(uiImage: preview).resizable().scaledToFit().frame(maxHeight: 240)
                    }
                    PhotosPicker(model.preview == nil ? "Choose a photo" : "Choose another photo",
                                 selection: $photo, matching: .images)
                    if !model.samples.isEmpty {
                        Menu("Use a sample from the build") {
                            ForEach(Array(model.samples.enumerated()), id: \.offset) { i, sample in
                                Button("\(i): \(sample.prompt)") { model.useSample(sample) }
                            }
                        }
                    }
                }
                Section("Question") {
                    TextField("Ask about the picture", text: $model.question, axis: .vertical)
                    Button("Ask") { Task { await model.ask() } }
                        .disabled(model.isBusy || model.question.isEmpty)
                }
                Section("Answer") {
                    Text(model.answer.isEmpty ? "…" : model.answer).textSelection(.enabled)
                }
                Section("Figures") { FiguresView(model: model) }
                Section { Text(model.status).font(.footnote).foregroundStyle(.secondary) }
            }
            .navigationTitle("foveate")
            .toolbar {
                Button("Self-check") {
                    showCheck = true
                    Task { await model.selfCheck() }
                }
                .disabled(model.isBusy)
            }
            .sheet(isPresented: $showCheck) { SelfCheckView(model: model) }
            .task { await model.load() }
            .onChange(of: photo) { _, item in
                Task {
                    if let data = try? await item?.loadTransferable(type: Data.self) { model.setPhoto(data) }
                }
            }
        }
    }
}

struct FiguresView: View {
    let model: DemoModel

    var body: some View {
        row("Build", model.buildName)
        row("Plan", model.planName)
        row("Vision tokens", "\(model.visionTokens)")
        if let t = model.timings {
            row("Image encode", t.imageEncodeS.map { ms($0) } ?? "no image")
            row("Prefill", ms(t.prefillS))
            row("Time to first token", ms(t.ttftS))
            row("Decode", String(format: "%.1f tok/s (%d tokens)", t.decodeTokS, model.newTokens))
        }
    }

    private func row(_ label: String, _ value: String) -> some View {
        LabeledContent(label, value: value)
    }

    private func ms(_ seconds: Double) -> String { String(format: "%.0f ms", seconds * 1000) }
}

struct SelfCheckView: View {
    let model: DemoModel

    var body: some View {
        NavigationStack {
            List {
                Section {
                    switch model.checkPassed {
                    case .some(true): Label("Every golden case matches", systemImage: "checkmark.seal")
                    case .some(false): Label("Mismatch: see the cases below", systemImage: "xmark.octagon")
                    case .none: ProgressView()
                    }
                }
                Section("golden.json") {
                    ForEach(model.checkLines, id: \.self) { Text($0).font(.system(.footnote, design: .monospaced)) }
                }
            }
            .navigationTitle("Self-check")
        }
    }
}

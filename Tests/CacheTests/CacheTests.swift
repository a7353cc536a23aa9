import Foundation
import NIOCore
import NIOPosix
import Testing

@testable import Cache

struct CacheTests {
    func makeStore() throws -> ContentStore {
        let root = NSTemporaryDirectory() + "cache-test-\(UUID().uuidString)"
        let store = ContentStore(root: root)
        try store.prepare()
        return store
    }

    @Test func publishNamesTheFileByItsSHA256AndLeavesNoPartial() throws {
        let store = try self.makeStore()
        let writer = try store.createWriter(suffix: ".csv")
        let text = Array("hello, world\n".utf8)
        try text.withUnsafeBytes { try writer.write($0) }
        let file = try writer.publish()
        // sha256("hello, world\n")
        #expect(file.sha256 == "853ff93762a06ddbf722c4ebe9ddd66d8f63ddaea97f521c3ecc20da7c976020")
        #expect(file.path == store.objectsDirectory + "/\(file.sha256).csv")
        #expect(try Data(contentsOf: URL(fileURLWithPath: file.path)) == Data(text))
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.partialDirectory).isEmpty)
    }

    @Test func discardAndPrepareRemovePartialFiles() throws {
        let store = try self.makeStore()
        let discarded = try store.createWriter(suffix: ".csv")
        try Array("x".utf8).withUnsafeBytes { try discarded.write($0) }
        discarded.discard()
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.partialDirectory).isEmpty)
        // As if the process had died mid-write.
        FileManager.default.createFile(atPath: store.partialDirectory + "/left-by-a-crash.csv.partial", contents: Data("half".utf8))
        #expect(try store.prepare() == 1)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.partialDirectory).isEmpty)
    }

    @Test(.timeLimit(.minutes(1)))
    func readerFollowsAGrowingFileUntilItCompletes() async throws {
        let store = try self.makeStore()
        let file = GrowingFile()
        let writer = try store.createWriter(suffix: ".csv")
        let reads = (0..<3).map { _ in
            Task {
                let reader = GrowingFileReader(file: file, chunkSize: 1000, threadPool: .singleton)
                var data = Data()
                while let chunk = try await reader.next() { data.append(contentsOf: chunk.readableBytesView) }
                return data
            }
        }
        var expected = Data()
        file.begin(path: writer.partialPath)
        for i in 0..<50 {
            let block = Data("block \(i) \(String(repeating: "x", count: i * 37))\n".utf8)
            try block.withUnsafeBytes { try writer.write($0) }
            expected.append(block)
            file.append(length: writer.length)
            try await Task.sleep(for: .milliseconds(2))
        }
        let published = try writer.publish()
        file.complete(published)
        for read in reads { #expect(try await read.value == expected) }
    }

    @Test(.timeLimit(.minutes(1)))
    func readerThrowsWhenTheFileFails() async throws {
        let store = try self.makeStore()
        let file = GrowingFile()
        let writer = try store.createWriter(suffix: ".csv")
        file.begin(path: writer.partialPath)
        try Array("some bytes".utf8).withUnsafeBytes { try writer.write($0) }
        file.append(length: writer.length)
        let next = Task {
            let reader = GrowingFileReader(file: file, threadPool: .singleton)
            #expect(try await reader.next()?.readableBytes == 10)
            return try await reader.next()
        }
        try await Task.sleep(for: .milliseconds(50))
        writer.discard()
        file.fail(.cancelled())
        await #expect(throws: CacheError.self) { try await next.value }
    }

    @Test(.timeLimit(.minutes(1)))
    func aWaitingReaderCanBeCancelled() async throws {
        let file = GrowingFile()
        let reader = Task { try await GrowingFileReader(file: file, threadPool: .singleton).next() }
        try await Task.sleep(for: .milliseconds(20))
        reader.cancel()
        await #expect(throws: CancellationError.self) { try await reader.value }
    }

    @Test func rangesOfACompleteFile() async throws {
        let store = try self.makeStore()
        let writer = try store.createWriter(suffix: ".csv")
        try Array("0123456789".utf8).withUnsafeBytes { try writer.write($0) }
        let file = GrowingFile(completed: try writer.publish())
        let reader = GrowingFileReader(file: file, from: 3, to: 7, threadPool: .singleton)
        var got: [UInt8] = []
        while let chunk = try await reader.next() { got += chunk.readableBytesView }
        #expect(String(decoding: got, as: UTF8.self) == "3456")
    }

    @Test func stateMachineWakesOnlyReadersWithNewBytes() {
        var state = GrowingFileState<String>()
        let a = state.wait(beyond: 0, waiter: "a").answer
        let b = state.wait(beyond: 100, waiter: "b").answer
        #expect(a == nil && b == nil)
        let onBegin = state.begin(path: "/p")
        let on50 = state.append(length: 50)
        let on100 = state.append(length: 100)
        let onFail = state.fail(.cancelled())
        let onComplete = state.complete(.init(path: "/q", size: 1, sha256: "x"))
        #expect(onBegin.isEmpty && on100.isEmpty)
        #expect(on50 == ["a"])
        #expect(onFail == ["b"])
        #expect(onComplete.isEmpty, "a failed file stays failed")
    }
}

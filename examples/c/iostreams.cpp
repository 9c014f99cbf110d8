// C++ with std::thread, a mutex, iostreams and the standard library's
// containers and algorithms (libstdc++, dynamically linked): four threads
// count the words of a generated text into one map; the output is the
// same on every run and on Linux.
#include <algorithm>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

int main() {
    const char *words[] = {"alpha", "beta", "gamma", "delta", "epsilon"};
    std::vector<std::string> lines;
    for (int i = 0; i < 4000; i++) {
        std::ostringstream line;
        for (int j = 0; j <= i % 7; j++) line << words[(i * 3 + j) % 5] << ' ';
        lines.push_back(line.str());
    }
    std::map<std::string, long> counts;
    std::mutex lock;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            std::map<std::string, long> mine;
            for (size_t i = t; i < lines.size(); i += 4) {
                std::istringstream in(lines[i]);
                std::string word;
                while (in >> word) mine[word]++;
            }
            std::lock_guard<std::mutex> guard(lock);
            for (auto &[word, n] : mine) counts[word] += n;
        });
    }
    for (auto &thread : threads) thread.join();
    std::vector<std::pair<long, std::string>> sorted;
    for (auto &[word, n] : counts) sorted.emplace_back(n, word);
    std::sort(sorted.rbegin(), sorted.rend());
    for (auto &[n, word] : sorted) std::cout << word << ' ' << n << '\n';
    try {
        throw std::runtime_error("exceptions unwind");
    } catch (const std::exception &e) {
        std::cout << e.what() << std::endl;
    }
    return 0;
}

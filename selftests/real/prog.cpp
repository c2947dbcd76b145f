// A C++ program for g++ to compile (and then to run) in the guest: class and
// function templates instantiated over many types, the standard containers,
// and exceptions thrown through frames that own heap objects, so that the
// unwinder runs their destructors.  Deterministic output.
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace {

struct depth_reached : std::runtime_error {
	int depth;
	explicit depth_reached(int d)
		: std::runtime_error("depth " + std::to_string(d)), depth(d) {}
};

template <typename T> struct tree {
	T value;
	std::unique_ptr<tree> left, right;
	explicit tree(T v) : value(std::move(v)) {}

	void insert(T v)
	{
		auto &child = v < value ? left : right;
		if (child)
			child->insert(std::move(v));
		else
			child = std::make_unique<tree>(std::move(v));
	}
	template <typename F> void walk(F &&f) const
	{
		if (left)
			left->walk(f);
		f(value);
		if (right)
			right->walk(f);
	}
};

template <typename T> T make_value(uint32_t x);
template <> int make_value<int>(uint32_t x) { return int(x % 100000); }
template <> std::string make_value<std::string>(uint32_t x)
{
	return "k" + std::to_string(x % 7919) + std::string(x % 13, 'z');
}
template <> double make_value<double>(uint32_t x) { return (x % 10007) / 7.0; }

uint32_t next(uint32_t &seed)
{
	seed = seed * 1103515245u + 12345u;
	return seed >> 8;
}

template <typename T> std::string tree_summary(unsigned n)
{
	uint32_t seed = 7;
	tree<T> t(make_value<T>(next(seed)));
	for (unsigned i = 0; i < n; i++)
		t.insert(make_value<T>(next(seed)));
	std::ostringstream out;
	unsigned count = 0;
	T first{}, last{};
	t.walk([&](const T &v) {
		if (count++ == 0)
			first = v;
		last = v;
	});
	out << count << " " << first << " " << last;
	return out.str();
}

// Throws from DEPTH frames down; every frame holds a vector and a string
// on the heap that the unwinder must free.
int descend(int depth, int limit, std::vector<std::string> &trail)
{
	std::vector<int> held(depth + 8, depth);
	auto name = std::make_unique<std::string>("frame-" + std::to_string(depth));
	if (depth == limit)
		throw depth_reached(depth);
	trail.push_back(*name);
	return descend(depth + 1, limit, trail) + held[0];
}

using cell = std::variant<int, std::string, std::vector<int>>;

struct visit_size {
	size_t operator()(int) const { return 1; }
	size_t operator()(const std::string &s) const { return s.size(); }
	size_t operator()(const std::vector<int> &v) const { return v.size(); }
};

} // namespace

int main()
{
	std::cout << "tree<int> " << tree_summary<int>(20000) << "\n";
	std::cout << "tree<string> " << tree_summary<std::string>(20000) << "\n";
	std::cout << "tree<double> " << tree_summary<double>(20000) << "\n";

	long caught = 0, depths = 0;
	for (int round = 0; round < 2000; round++) {
		std::vector<std::string> trail;
		try {
			descend(0, 1 + round % 40, trail);
		} catch (const depth_reached &e) {
			caught++;
			depths += e.depth + long(trail.size());
		}
	}
	std::cout << "exceptions " << caught << " " << depths << "\n";

	std::map<std::string, std::vector<int>> index;
	std::unordered_map<int, std::list<std::string>> buckets;
	uint32_t seed = 99;
	for (int i = 0; i < 30000; i++) {
		uint32_t r = next(seed);
		auto key = make_value<std::string>(r);
		index[key].push_back(i);
		buckets[int(r % 257)].push_front(key);
		if (i % 5 == 0)
			index.erase(make_value<std::string>(next(seed)));
	}
	size_t total = 0;
	for (auto &kv : index)
		total += kv.second.size();
	std::set<size_t> lengths;
	for (auto &b : buckets)
		lengths.insert(b.second.size());
	std::cout << "containers " << index.size() << " " << total << " "
		  << *lengths.begin() << " " << *lengths.rbegin() << "\n";

	std::vector<cell> cells;
	for (int i = 0; i < 20000; i++) {
		if (i % 3 == 0)
			cells.emplace_back(i);
		else if (i % 3 == 1)
			cells.emplace_back(std::string(size_t(i % 61), 'q'));
		else
			cells.emplace_back(std::vector<int>(size_t(i % 37), i));
	}
	size_t sizes = 0;
	for (auto &c : cells)
		sizes += std::visit(visit_size{}, c);
	std::cout << "variants " << sizes << "\n";

	try {
		std::vector<int> v(10);
		(void)v.at(10);
	} catch (const std::out_of_range &) {
		std::cout << "out_of_range caught\n";
	}
	return 0;
}

// SPDX-License-Identifier: MIT
/*
 * cpp-ofstream [FILE]: writes a file with std::ofstream (whose buffers and
 * locale facets come from operator new), reads it back with std::ifstream and
 * prints what it read, then removes the file.
 */
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

int main(int argc, char **argv)
{
	std::string path = argc > 1 ? argv[1]
				    : "/tmp/cpp-ofstream." + std::to_string(getpid());
	{
		std::ofstream out(path);
		if (!out) {
			std::cerr << "cannot write " << path << "\n";
			return 1;
		}
		std::vector<std::string> lines;
		for (int i = 1; i <= 200; i++)
			lines.push_back("line " + std::to_string(i) + ": " +
					std::string(i % 50, '*'));
		for (const auto &l : lines)
			out << l << '\n';
	}
	std::ifstream in(path);
	std::stringstream all;
	all << in.rdbuf();
	std::string text = all.str();
	std::remove(path.c_str());
	std::cout << text;
	std::cout << "read back " << text.size() << " bytes\n";
	return 0;
}
